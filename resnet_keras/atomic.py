"""Writing a file atomically: a reader sees the old file or the new one, never half."""
import os


def write_atomic(path, data):
    """Write DATA (str or bytes) to PATH through a temporary file in the same
    folder, then rename it into place; the temporary file never outlives a
    failure. Returns PATH."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        with open(tmp, "wb" if isinstance(data, bytes) else "w",
                  **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
