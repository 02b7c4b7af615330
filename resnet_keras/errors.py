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


class MissingExtra(ImportError):
    """A feature needs a package (or a tested version of it) that an install
    extra provides; the message is one line naming the ``pip install`` command."""


def require(module, extra, purpose):
    """Import MODULE (a name) or raise :class:`MissingExtra` saying that PURPOSE
    needs it and that ``pip install 'resnet-keras[EXTRA]'`` provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        if getattr(err, "name", None) not in (module, module.split(".")[0]):
            raise
        package = module.split(".")[0].replace("_", "-")
        raise MissingExtra(f"{purpose} needs {package}, which is not installed: "
                           f"pip install 'resnet-keras[{extra}]'") from None
