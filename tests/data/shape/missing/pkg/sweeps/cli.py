def show():
    from .cli import _width  # the top-level cli.py was meant
    return _width
