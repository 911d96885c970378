_limit = 3
