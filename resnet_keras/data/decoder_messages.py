"""The image decoders' own stderr lines, counted instead of printed.

libjpeg ("Corrupt JPEG data: ...", "Not a JPEG file: ...", "Improper call to
JPEG library ..."), libpng and TensorFlow's decoder kernels print a line to
the process's stderr (file descriptor 2) for every damaged image they meet,
outside Python and outside TensorFlow's log level. An input pipeline passes
over the same damaged images every epoch, so those lines would bury
everything else. Within :func:`hidden`, such lines are counted (see
:func:`count`) and every other byte written to stderr passes through
unchanged.
"""
import contextlib
import os
import re
import sys
import threading

# The messages of libjpeg(-turbo)'s jerror.h that a damaged file can cause,
# libpng's, and TensorFlow's decoder kernels' own log lines.
DECODER_LINE = re.compile(
    rb"^(?:"
    rb"Corrupt JPEG data|Premature end of (?:JPEG|input) file|Not a JPEG file"
    rb"|Improper call to JPEG library|Invalid JPEG file structure"
    rb"|Unsupported (?:marker type|JPEG process|JPEG data precision|color conversion)"
    rb"|Invalid (?:SOS parameters|component ID|progressive parameters|crop request)"
    rb"|Bogus (?:marker length|Huffman table|DAC|DHT|DQT|sampling factors|JPEG colorspace"
    rb"|input colorspace|message code|buffer control mode|virtual array access)"
    rb"|(?:Huffman|Quantization|Arithmetic) table 0x[0-9a-fA-F]+ was not defined"
    rb"|JPEG datastream contains no image|Empty (?:JPEG image|input file)"
    rb"|Warning: (?:unknown JFIF revision|thumbnail image size)"
    rb"|Inconsistent progression sequence|Sampling factors too large"
    rb"|Maximum supported image dimension|Unrecognized component IDs"
    rb"|Application transferred too (?:few|many) scanlines"
    rb"|Missing Huffman code table entry|Huffman code size table overflow"
    rb"|Sorry, arithmetic code not supported|Requested features are incompatible"
    rb"|Scan script does not transmit all data|DCT coefficient out of range"
    rb"|Image too wide for this implementation|Component index \d+: mismatching sampling"
    rb"|Input file read error|Insufficient memory|Backing store not supported"
    rb"|Buffer passed to JPEG library is too small|Suspension not allowed here"
    rb"|Too many color components|JPEG parameter struct mismatch|Invalid scan script"
    rb"|Invalid memory pool code|Virtual array controller messed up|IDCT output block size"
    rb"|(?:Fractional|CCIR601) sampling not implemented|Not implemented yet"
    rb"|Requested feature was omitted at compile time|Cannot transcode due to multiple use"
    rb"|libpng (?:warning|error): "
    rb"|[IWEF]\d{4} [\d:.]+ +\d+ (?:jpeg_mem|jpeg_handle|png_io|gif_io|decode_image_op)"
    rb"\.cc:\d+\] "
    rb")")
# A partial line longer than this is passed on without waiting for its end.
MAX_PENDING = 4096


class _Filter:
    """Process-wide: fd 2 goes to a pipe read by a thread while any
    :func:`hidden` block is active (nested blocks share one filter)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.depth = 0
        self.count = 0
        self.thread = None
        self.saved = self.write = self.read = None

    def enter(self):
        with self.lock:
            self.depth += 1
            if self.depth > 1:
                return
            try:
                self._start()
            except OSError:  # no usable fd 2 (a closed stderr): nothing to filter
                self.saved = None

    def exit(self):
        with self.lock:
            self.depth -= 1
            if self.depth == 0 and self.saved is not None:
                self._stop()

    def _start(self):
        _flush_python_stderr()
        self.read, self.write = os.pipe()
        self.saved = os.dup(2)
        os.dup2(self.write, 2)
        self.thread = threading.Thread(target=self._pump, args=(self.read, self.saved),
                                       name="decoder-message-filter", daemon=True)
        self.thread.start()

    def _stop(self):
        _flush_python_stderr()
        os.dup2(self.saved, 2)
        os.close(self.write)
        # A child process that inherited the pipe may keep it open: do not wait for it.
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            os.close(self.read)
            os.close(self.saved)
        self.thread = self.saved = self.write = self.read = None

    def _pump(self, read, out):
        pending = b""
        while True:
            try:
                chunk = os.read(read, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            *lines, pending = re.split(rb"(?<=[\r\n])", pending + chunk)
            if len(pending) > MAX_PENDING:
                lines, pending = lines + [pending], b""
            self._forward(lines, out)
        self._forward([pending] if pending else [], out)

    def _forward(self, lines, out):
        kept = []
        for line in lines:
            if DECODER_LINE.match(line.lstrip()):
                self.count += 1
            else:
                kept.append(line)
        if kept:
            try:
                os.write(out, b"".join(kept))
            except OSError:  # the real stderr is gone; keep draining the pipe
                pass


def _flush_python_stderr():
    for stream in (sys.stderr, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


_FILTER = _Filter()


@contextlib.contextmanager
def hidden():
    """Within the block, the image decoders' lines on stderr are counted, not shown.

    Everything else written to file descriptor 2 (Python's ``sys.stderr``,
    TensorFlow's other log lines) passes through. Blocks may nest and may be
    entered from several threads; the filter is active while any is.
    """
    _FILTER.enter()
    try:
        yield
    finally:
        _FILTER.exit()


def count():
    """How many decoder lines :func:`hidden` has kept off stderr in this process."""
    return _FILTER.count
