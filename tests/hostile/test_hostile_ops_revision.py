"""A character's ModelScope revision is a moving branch ("master") and the model folder's remote code runs when it
loads (issue 15 item 10): a download needs a pinned commit, or an explicit opt-in."""

from __future__ import annotations

import pytest

from xiyou.backends.base import BackendError
from xiyou.backends.transformers_backend import check_revision, resolve_weights, revision_is_pinned
from xiyou.character import get_character


@pytest.fixture
def modelscope(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """ModelScope with nothing cached: records each network download instead of doing it."""
    module = pytest.importorskip("modelscope")
    downloads: list[tuple[str, str]] = []

    def snapshot_download(model_id: str, revision: str | None = None, local_files_only: bool = False, **_: object):
        if local_files_only:
            raise FileNotFoundError("not cached")
        downloads.append((model_id, str(revision)))
        return str(tmp_path)

    monkeypatch.setattr(module, "snapshot_download", snapshot_download)
    for cid in ("sanzang", "wukong", "bajie", "wujing"):
        monkeypatch.delenv(f"XIYOU_MODEL_{cid.upper()}", raising=False)
    monkeypatch.delenv("XIYOU_ALLOW_UNPINNED_REVISION", raising=False)
    return downloads


def test_a_branch_is_not_downloaded_without_an_opt_in(modelscope, monkeypatch: pytest.MonkeyPatch) -> None:
    wukong = get_character("wukong").model_copy(update={"revision": "master"})
    with pytest.raises(BackendError) as refused:
        resolve_weights(wukong)
    message = str(refused.value)
    assert "'master'" in message and "trust_remote_code" in message
    assert f"git ls-remote https://www.modelscope.cn/{wukong.model_id}.git master" in message  # how to pin
    assert "xiyou/characters/wukong.toml" in message and "XIYOU_ALLOW_UNPINNED_REVISION=1" in message
    assert modelscope == []  # nothing fetched
    monkeypatch.setenv("XIYOU_ALLOW_UNPINNED_REVISION", "1")
    resolve_weights(wukong)
    assert modelscope == [(wukong.model_id, "master")]


def test_a_commit_id_or_a_version_tag_is_downloaded(modelscope) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    for revision in (commit, "v1.0.2"):
        resolve_weights(get_character("bajie").model_copy(update={"revision": revision}))
    assert [r for _, r in modelscope] == [commit, "v1.0.2"]
    assert not revision_is_pinned("main") and not revision_is_pinned("dev-1")
    check_revision(get_character("sanzang").model_copy(update={"revision": commit[:12]}))  # a short commit id
