"""The dashboard under /ui/: server-rendered pages for people (issue 13).

- `install`: wires the pages, the static files and the security headers into the app;
- `session`: sign-in sessions (signed cookies holding a key's hash, never the key) and CSRF;
- `i18n`: English and Russian catalogs, status meanings, the language and zone chosen;
- `render`: the Jinja2 environments (autoescaped) and the page responses;
- `overview`, `buckets`, `bucket_store`, `chart`: the overview's figures, its cached counts
  (in memory, and stored for restarts), its SVG chart;
- `pages_*`: the routes, one module per page family.
"""
