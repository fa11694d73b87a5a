"""The consortium's consent notice as the patients' pages read it: a title, paragraphs, the
hash of exactly its bytes; a file that cannot be shown refused with what is wrong; a new
version picked up when the file changes; and HIE_CONSENT_NOTICE checked at start."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from exchange.errors import ConfigurationError
from exchange.pages.notice import MAX_BYTES, NoticeFile, parse_notice
from exchange.settings import load_settings

TEXT = "某县医共体健康信息共享告知书 v2\n\n第一段，\n换行的第一段。\n\n第二段。\n"


def test_a_notice_is_its_title_and_paragraphs_and_the_hash_of_its_bytes() -> None:
    data = TEXT.encode()
    notice = parse_notice(data, "n.txt")
    assert notice.title == "某县医共体健康信息共享告知书 v2"
    assert notice.paragraphs == ("第一段，\n换行的第一段。", "第二段。")
    assert notice.sha256 == hashlib.sha256(data).hexdigest()
    # Windows line ends and a byte-order mark read the same; the hash is still of the bytes.
    windows = b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode()
    other = parse_notice(windows, "n.txt")
    assert (other.title, other.paragraphs) == (notice.title, notice.paragraphs)
    assert other.sha256 == hashlib.sha256(windows).hexdigest() != notice.sha256


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("告知书".encode("gb18030"), "UTF-8"),
        (b"", "title on the first line"),
        ("只有标题\n\n".encode(), "title on the first line"),
        (b"x" * (MAX_BYTES + 1), f"at most {MAX_BYTES} bytes"),
    ],
    ids=["not-utf8", "empty", "title-only", "too-big"],
)
def test_a_notice_that_cannot_be_shown_is_refused_naming_the_file(data: bytes, says: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_notice(data, "/etc/hie/notice.txt")
    assert says in str(refused.value) and "/etc/hie/notice.txt" in str(refused.value)


def test_the_file_is_read_again_only_once_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "consent_notice.txt"
    notices = NoticeFile(path)
    assert notices.current() is None  # none published yet
    path.write_bytes(TEXT.encode())
    first = notices.current()
    assert first is not None and notices.current() is first
    path.write_bytes(TEXT.replace("v2", "v3").encode())
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    second = notices.current()
    assert second is not None and second.title.endswith("v3") and second != first
    path.unlink()
    assert notices.current() is None
    assert NoticeFile(None).current() is None


def test_the_setting_names_a_file_or_the_data_dir_holds_it(tmp_path: Path) -> None:
    env = {"HIE_DATA_DIR": str(tmp_path)}
    assert load_settings(env).consent_notice == tmp_path.resolve() / "consent_notice.txt"
    given = tmp_path / "告知书.txt"
    given.write_bytes(TEXT.encode())
    assert load_settings({**env, "HIE_CONSENT_NOTICE": str(given)}).consent_notice == given
    with pytest.raises(ConfigurationError) as refused:
        load_settings({**env, "HIE_CONSENT_NOTICE": str(tmp_path / "missing.txt")})
    assert "HIE_CONSENT_NOTICE" in str(refused.value)
