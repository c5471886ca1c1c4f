"""Test doubles and real throwaway services the tests start."""
