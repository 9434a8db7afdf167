"""Shared set-up for the dashboard tests: signing in over plain HTTP."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def sign_in(client: httpx.Client, key: str) -> httpx.Response:
    """Sign in with `key` as a person would: fetch the form, post it with its token."""
    form = client.get("/ui/login")
    assert form.status_code == 200, form.text
    return client.post("/ui/login", data={"csrf": csrf_of(form.text), "key": key})


def page_csrf(client: httpx.Client, path: str = "/ui/") -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return csrf_of(response.text)
