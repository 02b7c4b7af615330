"""One-line error messages for users."""


def first_line(err, limit=300):
    """The gist of an exception: its first line (and the next if that ends in ':').

    Long lines are cut at LIMIT characters; an empty message gives the type name.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text if len(text) <= limit else text[:limit] + "..."
