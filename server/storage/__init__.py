"""The server's storage, one module per resource (as the FastAPI full-stack template's
`crud`): each function owns its statement, written out whole, runs it over a `Database` and
decodes the rows into a record of `server.records`. The same statements run on SQLite and
Postgres; JSON columns are text. Every read of a user's resource is filtered by `user_id`:
another user's ids simply do not exist (the API answers 404).

- `accounts`: API keys, device tokens, device presence;
- `assistants`, `threads`, `runs`, `crons`: the LangGraph resources;
- `bridge`: the device outbox and inbox, park, answer and claim, the statements a device
  round trip runs (each hot one a single statement on Postgres).
"""
