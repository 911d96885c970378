import sqlite3

from ..models import engine


def save():
    from pkg.sources.hub import fetch  # absolute form, inside a function
    return fetch, engine, sqlite3
