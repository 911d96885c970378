def _read_text_file(path):
    return path
