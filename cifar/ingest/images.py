"""One image file as 32x32 RGB uint8 pixels, or a one-line DataError that says why not."""

from __future__ import annotations

import io
import itertools
import math
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from cifar.cli import in_a_dvc_workspace_copy
from cifar.config import IMAGE_SIZE
from cifar.errors import DataError, printable, unreadable
from cifar.reading import kind_of

_FIX = f"replace it with a {IMAGE_SIZE}x{IMAGE_SIZE} PNG or JPEG file, or remove it"
# The only formats decoded, whatever a file's name says: Pillow would otherwise open any of
# the dozens it knows (EPS through Ghostscript, TIFF, ...), each a decoder an image can attack.
FORMATS = ("PNG", "JPEG")
# A 32x32 PNG or JPEG takes 1-4 KB, up to a few hundred KB with an embedded colour profile
# or metadata; a file larger than this is not one, and is refused before it is read whole.
MAX_IMAGE_FILE_BYTES = 1 << 20
# Pillow unpacks a PNG's text chunks (tEXt, zTXt, iTXt) as it opens it, up to 64 MiB of them:
# a 68 KB file of zTXt chunks took 64 MiB and 0.2 s of CPU in each decoding thread. No more
# text than the file may take is unpacked here.
PngImagePlugin.MAX_TEXT_MEMORY = MAX_IMAGE_FILE_BYTES
# What Git LFS leaves in place of a file it has not fetched (in a clone made without Git LFS, or
# in DVC's copy of the workspace for an experiment): a few lines of text, which were called an
# unreadable image ("remove it") or a corrupt archive ("download it again").
_GIT_LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\n"
# The files fetched whatever .lfsconfig's lfs.fetchinclude and lfs.fetchexclude say (the empty
# lists override them): where a repository leaves its data out of default fetches, the plain
# `git lfs pull` advised fetched nothing, and the same line came back.
GIT_LFS_PULL = "`git lfs pull --include= --exclude=`"


def git_lfs_pointer(start: bytes) -> str | None:
    """What a file that begins with `start` is, and the fix, where it is a Git LFS pointer; else None."""
    if not start.startswith(_GIT_LFS_POINTER):
        return None
    if in_a_dvc_workspace_copy():
        # DVC also turned the workspace's images into pointers as it made its copy (DVC 3.67):
        # `git lfs pull` there, as advised, was undone by the next run.
        return (
            "a Git LFS pointer file, not the file it stands for: DVC fetches no Git LFS file into the copy of the "
            "workspace that it runs this experiment in, and may leave the workspace's as pointers too (`git lfs "
            "checkout` restores them); move the data out of the repository and give data.source as its absolute path"
        )
    return f"a Git LFS pointer file, not the file it stands for; fetch it with {GIT_LFS_PULL} (Git LFS installed)"


def read_image(path: Path) -> np.ndarray:
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise unreadable(path, error, _FIX) from None
    # Opening anything else could block (a named pipe waits for a writer) or never end (/dev/zero).
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: {kind_of(mode)}, not an image file; {_FIX}")
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_IMAGE_FILE_BYTES + 1)  # one byte more tells a file over the limit
    except OSError as error:
        raise unreadable(path, error, _FIX) from None
    return decode_image(data, str(path))


def decode_image(data: bytes, where: str, archive: Path | None = None) -> np.ndarray:
    """The pixels of an image file's bytes; `where` names the file in messages, a member of
    `archive` where it is one."""
    if len(data) > MAX_IMAGE_FILE_BYTES:
        raise DataError(
            f"{where}: more than {MAX_IMAGE_FILE_BYTES >> 20} MiB, far more than a {IMAGE_SIZE}x{IMAGE_SIZE} image "
            f"takes; {_FIX}"
        )
    if data.startswith(_PNG_SIGNATURE):
        _check_png_chunks(data, where)
    try:
        with warnings.catch_warnings():
            # Pillow warns of a possible decompression bomb; the size check below refuses it anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                # Image.open has read only the header: refuse a wrong size before decoding a pixel.
                if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                    width, height = image.size
                    raise DataError(f"{where}: image is {width}x{height}, expected {IMAGE_SIZE}x{IMAGE_SIZE}; {_FIX}")
                if image.format == "PNG":
                    chunks = _check_png_structure(data, where)
                    _check_palette_indices(image, where)
                    _refuse_transparent_pixels(image, chunks, where)
                else:
                    _check_jpeg_data(data, where)
                return _as_rgb8(_as_shown(image))
    except UnidentifiedImageError:
        if archive and data.startswith(_GIT_LFS_POINTER):  # fetching changed nothing inside the archive
            raise DataError(
                f"{where}: a Git LFS pointer file, not the image it stands for: {archive} was packed from a "
                f"checkout whose Git LFS files were not fetched; pack it again after {GIT_LFS_PULL} there"
            ) from None
        pointer = git_lfs_pointer(data)
        if pointer:
            raise DataError(f"{where}: {pointer}") from None
        raise DataError(f"{where}: not a readable PNG or JPEG image, the only formats read; {_FIX}") from None
    except Image.DecompressionBombError as error:
        raise DataError(f"{where}: image is far larger than {IMAGE_SIZE}x{IMAGE_SIZE} ({error}); {_FIX}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{where}: not a readable image ({error}); {_FIX}") from None
    except DataError:
        raise
    except Exception as error:  # Pillow's chunk and EXIF readers raise what they meet (IndexError, struct.error)
        raise DataError(f"{where}: not a readable image ({type(error).__name__}: {error}); {_FIX}") from None


# PNG colour type -> samples per pixel (PNG spec, 11.2.2).
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_PALETTE = 3  # the colour type whose samples index a PLTE chunk
# Adam7 interlacing's seven passes: (first column, first row, column step, row step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A 32x32 image's PNG holds a header, a few chunks of colour and text data, and pixel data (in
# chunks of 8 KiB or more as encoders write it).
MAX_PNG_CHUNKS = 256


def _check_png_chunks(data: bytes, where: str) -> None:
    """Before Pillow reads a PNG: chunks whose CRC fails (Pillow decoded changed pixels that
    libpng refuses), more chunks than an image needs, a second colour profile (iCCP; 900 of
    them, each inflating 1 MiB, took 2 s of CPU an image), or animation (acTL, fcTL, fdAT: Pillow
    decoded a 16x16 first frame on a black canvas, libpng the 32x32 image)."""
    position, kinds = len(_PNG_SIGNATURE), []
    while position + 12 <= len(data) and len(kinds) <= MAX_PNG_CHUNKS:
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body_end = position + 8 + length
        if body_end + 4 <= len(data) and zlib.crc32(data[position + 4 : body_end]) != int.from_bytes(
            data[body_end : body_end + 4], "big"
        ):
            name = printable(kind.decode("latin-1"))
            raise DataError(f"{where}: its {name} chunk fails its CRC check: the file is damaged; {_FIX}")
        kinds.append(kind)
        position = body_end + 4
        if kind == b"IEND":  # what follows is no chunk: NUL padding was read as one that failed its CRC
            break
    if len(kinds) > MAX_PNG_CHUNKS:
        raise DataError(f"{where}: a PNG of more than {MAX_PNG_CHUNKS} chunks, far more than an image needs; {_FIX}")
    if kinds.count(b"iCCP") > 1:
        raise DataError(f"{where}: {kinds.count(b'iCCP')} colour profiles (iCCP chunks), where PNG allows one; {_FIX}")
    if b"iCCP" in kinds and b"IDAT" in kinds and kinds.index(b"iCCP") > kinds.index(b"IDAT"):
        # Pillow reads it as it finishes decoding, and failed in a traceback on a short one
        raise DataError(
            f"{where}: a colour profile (iCCP chunk) after its pixel data, where PNG requires it before; {_FIX}"
        )
    # Pillow reads a frame from fcTL even without acTL, which libpng (and the PNG standard)
    # takes to mean a still image; fdAT is a frame's data.
    if {b"acTL", b"fcTL", b"fdAT"} & set(kinds):
        raise DataError(f"{where}: an animated PNG, whose frames Pillow and libpng read differently; {_FIX}")


def _check_png_structure(data: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """Refuse what the PNG standard forbids and Pillow (13.0) decodes anyway without a word:
    a first chunk other than the header (IHDR), which hid the rest from this check, or a second
    header, by which Pillow decodes the pixels; pixel data
    that ends before its last row (the missing rows black, where libpng says "Not enough image
    data"); a palette image without exactly one palette of 1 to 256 colours before its pixel
    data (decoded black, or with another palette than libpng's). Hand-written because Pillow
    has no strict mode; the check inflates at most one image's bytes."""
    chunks, position = [], 8
    while position + 8 <= len(data) and (not chunks or chunks[-1][0] != b"IEND"):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunks.append((kind, data[position + 8 : position + 8 + length]))
        position += 12 + length  # length, type, data, CRC
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise DataError(f"{where}: its first chunk is not the image header (IHDR) that PNG requires there; {_FIX}")
    if [kind for kind, _ in chunks].count(b"IHDR") > 1:
        # Pillow decodes the pixels by the last header: RGB pixels were read as grey.
        raise DataError(f"{where}: a second image header (IHDR), where PNG allows one; {_FIX}")
    width, height, depth, colour, interlaced = struct.unpack(">IIBB2xB", chunks[0][1])
    if colour not in _PNG_SAMPLES:
        return chunks  # Pillow has refused it already
    kinds = [kind for kind, _ in chunks]
    before_pixels = chunks[: kinds.index(b"IDAT")] if b"IDAT" in kinds else chunks
    palettes = [body for kind, body in before_pixels if kind == b"PLTE"]
    if colour == _PNG_PALETTE and not (
        kinds.count(b"PLTE") == len(palettes) == 1 and 3 <= len(palettes[0]) <= 768 and len(palettes[0]) % 3 == 0
    ):
        raise DataError(
            f"{where}: a palette image without one palette of 1 to 256 colours before its pixel data (PLTE "
            f"chunk); {_FIX}"
        )
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    expected = 0
    for column, row, column_step, row_step in passes:
        columns, rows = math.ceil((width - column) / column_step), math.ceil((height - row) / row_step)
        if columns > 0 and rows > 0:  # each row: a filter-type byte, then its packed samples
            expected += rows * (1 + math.ceil(columns * depth * _PNG_SAMPLES[colour] / 8))
    try:
        compressed = b"".join(body for kind, body in chunks if kind == b"IDAT")
        found = len(zlib.decompressobj().decompress(compressed, expected))
    except zlib.error as error:
        raise DataError(f"{where}: not a readable image ({error}); {_FIX}") from None
    if found < expected:
        raise DataError(f"{where}: its pixel data ends early ({found:,} of {expected:,} bytes); {_FIX}")
    return chunks


_PNG_GREY, _PNG_COLOUR = 0, 2  # the colour types whose tRNS chunk names one transparent grey or colour
_TRANSPARENT = (
    "has transparent pixels, whose hidden colours an import of its RGB would show; flatten it onto a background "
    "colour and save it without transparency, or remove it"
)


def _refuse_transparent_pixels(image: Image.Image, chunks: list[tuple[bytes, bytes]], where: str) -> None:
    """Refuse a PNG with transparent pixels: the colours they hide, which no viewer shows, were
    imported (alpha 0 over noise came in as a dog). A grey or colour PNG names one transparent
    value in its tRNS chunk, as a sample of its bit depth, which Pillow compares with its 8-bit
    pixels (a 2-bit white left opaque, a 16-bit colour matched by its high byte): compared here
    with the samples as stored. Pillow keeps 16-bit colour to its high bytes: a pixel that
    matches the value's there may or may not be transparent, and is refused as such."""
    depth, colour = struct.unpack(">8xBB3x", chunks[0][1])
    before_pixels = itertools.takewhile(lambda chunk: chunk[0] != b"IDAT", chunks)
    named = next((body for kind, body in before_pixels if kind == b"tRNS"), None)
    if colour in (_PNG_GREY, _PNG_COLOUR) and named is not None:
        samples = 1 if colour == _PNG_GREY else 3
        value = np.frombuffer(named[: 2 * samples], dtype=">u2").astype(np.int64)
        if depth < 8:  # Pillow scales 1-, 2- and 4-bit grey to 0..255
            value = value * (255 // (2**depth - 1))
        inexact = colour == _PNG_COLOUR and depth == 16
        if inexact:
            value = value >> 8
        pixels = np.asarray(image.convert("L") if depth < 8 else image).astype(np.int64)
        transparent = (pixels == value[0]) if samples == 1 else (pixels == value).all(axis=-1)
        if inexact and transparent.any():
            raise DataError(
                f"{where}: a 16-bit colour PNG with a transparent colour (tRNS chunk) that its pixels may hold, "
                f"which is not read exactly here; save it without transparency (or at 8 bits), or remove it"
            )
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        transparent = np.asarray(image.convert("RGBA"))[..., 3] < 255
    else:
        return
    if transparent.any():
        raise DataError(f"{where}: {_TRANSPARENT}")


def _check_jpeg_data(data: bytes, where: str) -> None:
    """Refuse a JPEG that libjpeg decodes only with a warning: a scan cut short and closed
    with an end marker came out with its missing rows grey, and Pillow keeps the warning to
    itself. simplejpeg (the same libjpeg-turbo) raises on it in strict mode; Pillow still
    decodes the pixels. All 60,000 images of the JPEG mirror pass, at about 11 us each."""
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)
    except ValueError as error:
        raise DataError(f"{where}: its JPEG data is damaged or cut short ({error}); {_FIX}") from None


def _check_palette_indices(image: Image.Image, where: str) -> None:
    """Refuse a palette image whose pixels index past its palette: Pillow decodes each such
    pixel black without a word (a palette of 2 colours for indices up to 255 came out nearly
    all black); libpng calls it an error."""
    if image.mode != "P":
        return
    colours = len(image.palette.palette) // len(image.palette.mode)
    highest = image.getextrema()[1]
    if highest >= colours:
        raise DataError(
            f"{where}: its pixels use palette entry {highest}, beyond its palette of {colours} colours; {_FIX}"
        )


def _as_shown(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says, as viewers show it (phones and cameras
    write one: imported unturned, a dog on its side). EXIF that Pillow cannot parse is passed
    over, as libpng and viewers pass it over."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # Pillow's TIFF reader raises what it meets: SyntaxError, struct.error, ...
        return image
    return ImageOps.exif_transpose(image) if orientation in range(2, 9) else image


def _as_rgb8(image: Image.Image) -> np.ndarray:
    """Its pixels as 8-bit RGB, transparency checked already (_refuse_transparent_pixels): an
    alpha channel of 255 or a transparent value no pixel has drops out."""
    image.info.pop("transparency", None)  # Pillow warned, converting a palette's, or matched it inexactly
    if image.mode.startswith("I;16"):
        # 16-bit greyscale (a 16-bit grey PNG): convert("RGB") would clip 0..65535 to 0..255,
        # turning nearly every pixel white, so scale it down instead.
        grey = np.rint(np.asarray(image) / 257).astype(np.uint8)  # 65535 / 255 = 257
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))
