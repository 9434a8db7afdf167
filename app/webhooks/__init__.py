"""Outbound webhooks: the change feed pushed, signed and in order, to subscribers' URLs.

- `targets`: which URLs and addresses we may POST to (SSRF guard).
- `signing`: secrets and Standard Webhooks signatures.
- `sender`: one signed POST to the checked address, with its outcome.
- `subscriptions`: creating, changing and reading subscriptions.
- `outbox`: the per-subscription state machine in the database (lease, batch,
  cursor, retries).
- `delivery`: the loop that runs it (in the service, or `targetsms-receiver deliver`).
- `metrics`: counters, and lag read from the database at scrape time.
"""
