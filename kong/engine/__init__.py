"""The engine: the only package that imports twill.

- ``grammar``: twill's own parser and command list;
- ``scripts``: render a test body for a site and validate it (safe mode);
- ``transport``: what twill's httpx client may do (page size, requests per step, TLS);
- ``runner``: execute one validated script in isolation, return a plain Outcome;
- ``pool``: many checks at once in forked worker processes, with hard timeouts.

Imports run one way: pool → runner → scripts → grammar; nothing here reads
the database.
"""
