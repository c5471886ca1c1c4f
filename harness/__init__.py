"""Real parts that tests and benchmarks share: a throwaway Postgres cluster (`postgres`),
`relaygraph serve` and `relaygraph device` as processes (`processes`), the OpenAI-compatible
fake model server (`fake_openai`) and run records made straight in the repository
(`records`)."""
