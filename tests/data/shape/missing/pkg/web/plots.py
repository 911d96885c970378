def draw():
    from .report import table  # report moved to runs/
    return table
