class Page:
    pass
