"""What the commands share: option values parsed and checked before anything runs."""

from __future__ import annotations

from pathlib import Path


def _split(values):
    """Accept both ``--methods a b`` and ``--methods a,b``."""
    if not values:
        return ()
    out = []
    for v in values:
        out += [p for p in v.split(",") if p]
    return tuple(out)


def check_counts(args, flags=("workers", "images_per_task")) -> None:
    """Each of ``flags`` (argparse destinations) that is given must be >= 1.

    Raises InputError naming the option, e.g. ``--workers must be >= 1, got 0``
    (:func:`cnnvis_eval.params.integer`'s message).
    """
    from ..params import integer

    for flag in flags:
        value = getattr(args, flag, None)
        if value is not None:
            integer(value, f"--{flag.replace('_', '-')}")


SYNTHETIC_DEFAULT = 8  # generated images of a bare ``synthetic`` / ``scenes`` / ``birds`` in --images
GENERATED = ("synthetic", "scenes", "birds")  # the generated image kinds --images may name


def _images(entries) -> dict:
    """``--images`` entries -> ``{"photos": (...), "synthetic": N, "scenes": N, "birds": N}``:
    photo names, and at most once each of ``synthetic``, ``scenes`` and ``birds``
    (:data:`SYNTHETIC_DEFAULT` images) or ``<kind>:N`` (N >= 1); a kind not named gets 0.

    Raises
    ------
    InputError
        A malformed or repeated generated entry (photo names are checked by RunConfig).
    """
    from ..errors import InputError

    photos, counts, given = [], dict.fromkeys(GENERATED, 0), {}
    for entry in entries:
        kind, _, n = entry.partition(":")
        if kind not in GENERATED:
            photos.append(entry)
            continue
        if kind in given:
            raise InputError(f"--images gives the {kind} images twice ({given[kind]!r} and {entry!r}); "
                             f"give one {kind}:N")
        given[kind] = entry
        if entry == kind:
            counts[kind] = SYNTHETIC_DEFAULT
        elif n.isdigit() and int(n) >= 1:  # isdigit: no sign, no spaces, no decimal point
            counts[kind] = int(n)
        else:
            raise InputError(f"--images {entry!r}: N in {kind}:N must be a whole number >= 1, got {n!r}")
    return {"photos": tuple(photos), **counts}


def _shape(text):
    """``--input-shape H,W,C`` -> (H, W, C) (range checked by RunConfig)."""
    from ..errors import InputError

    if text is None:
        return None
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise InputError(f"--input-shape must be H,W,C (three whole numbers), got {text!r}")
    return tuple(int(p) for p in parts)


def _check_writable(folder: Path) -> None:
    """InputError unless ``folder`` exists as a writable folder or can be created.

    Probes the folder itself, or its nearest existing parent, with an anonymous temporary
    file (removed on close): nothing is left behind, and no run folder is made before the
    run starts.  (A permission check would pass for root on a read-only mount.)
    """
    import tempfile

    from ..errors import InputError

    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write the run folder {str(folder)!r}: {str(probe)!r} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise InputError(f"cannot write the run folder {str(folder)!r}: {str(probe)!r} is not writable "
                         f"({err.strerror or err})") from None
