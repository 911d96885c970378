def run():
    import llama_cpp
    import sqlite3
    from urllib.request import urlopen
    return llama_cpp, sqlite3, urlopen
