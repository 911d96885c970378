"""The Hugging Face Hub: list a repo's step branches and GGUF files, resolve revisions, download pinned files.

Owns every network call of pythia_compare, made through huggingface_hub with the endpoint, cache dir and
token of `Settings` passed explicitly on each call (huggingface_hub reads HF_* variables once at import,
and this module never reads them). Downloads land in huggingface_hub's own cache (Settings.hf_cache_dir),
pinned to a commit sha; huggingface_hub writes to a temporary `.incomplete` file and renames it, and a
freshly downloaded LFS file is checked against its sha256 here, so a returned path always holds a whole,
verified file. Offline (Settings.offline) or with the Hub unreachable, only cached files are used; a missing
one is an error that names it and offers the bundled `demo` suite, never a silent substitute.

What a run takes from that cache is recorded and guarded for the cache budget (HfCache, below; budget.py
prunes): each revision a run downloads or finds cached gets a use record whose time is set at every use, and the
run holds its repo's use lock (files.UseLock) until Hub.release(), so a prune leaves that repo whole meanwhile.

The backup dataset (BackupDataset, for backup.py): reading a dataset repo's files, and pushing a local folder
to it with huggingface_hub's CommitScheduler.

Never converts, quantizes or loads models, and never prints a token.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx2
from filelock import FileLock, Timeout
from huggingface_hub import (CommitScheduler, HfApi, RepoUrl, get_hf_file_metadata, hf_hub_download, hf_hub_url,
                             scan_cache_dir, try_to_load_from_cache)
from huggingface_hub.errors import (CacheNotFound, GatedRepoError, HfHubHTTPError, HFValidationError,
                                    LocalEntryNotFoundError, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError, RevisionResolutionError)

from .checkpoint import WEIGHT_FILES
from ..config import DEFAULT_ENDPOINT, Settings
from ..errors import HubError, MissingOnHub, OfflineMissing
from ..files import UseLock, sha256_file, write_atomic
from ..variants import builtin_steps, quant_from_filename, quant_rank

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_STEP_RE = re.compile(r"^step(\d+)$")
_DEMO_HINT = "or use the bundled demo suite, which needs no network (demo@step0, demo:Q4_K_M)"
_API_TIMEOUT = 30.0  # seconds for one metadata request
# pythia-compare's use records and use locks, inside huggingface_hub's own lock folder (which its cache scan skips)
_USE_DIR = (".locks", "pythia-compare")

log = logging.getLogger(__name__)


class HubUnreachable(HubError):
    """The Hub could not be reached (connection refused, DNS failure, timeout) and nothing usable is cached."""




class Hub:
    """The Hub as pythia_compare sees it, for one Settings (endpoint, cache dir, token, offline)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._token: str | bool = settings.hf_token or False  # False: never fall back to a stored token
        self._api = HfApi(endpoint=self.endpoint, token=self._token, library_name="pythia-compare")
        self._held: dict[str, UseLock] = {}  # repo folder -> its use lock, held until release()
        self._held_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return self.settings.hub_endpoint.rstrip("/")

    @property
    def cache_dir(self) -> Path:
        return Path(self.settings.hf_cache_dir).expanduser()

    # --- what a run uses (the cache budget's record and guard) ---
    def _hold(self, repo: str, repo_type: str = "model") -> None:
        """Guard `repo` until release(): hold its use lock (shared; a prune leaves a held repo whole). Taken before
        the cache is looked at, so a download under way and a checkpoint being converted are covered.

        Bookkeeping only: a cache folder that cannot be written leaves the run unguarded, never failed; offline
        with no cache folder there is nothing to guard and nothing is made."""
        if self.settings.offline and not self.cache_dir.is_dir():
            return
        folder = _repo_folder(repo_type, repo)
        try:
            with self._held_lock:
                if folder not in self._held:
                    self._held[folder] = UseLock(_use_lock(self.cache_dir, folder)).share()
        except OSError as e:
            log.debug("cannot hold %s in %s: %s", repo, self.cache_dir, e)

    def _used(self, repo: str, commit: str, repo_type: str = "model") -> None:
        """Record that a run used `repo` at `commit` (found in the cache or downloaded): its use record, made if
        new, gets now as its time. That record makes the revision one the cache budget counts (HfCache)."""
        _record_use(self.cache_dir, repo_type, repo, commit)

    def release(self) -> None:
        """Let go of every repo this Hub's runs used (at the end of a run): a prune may delete them from now on."""
        with self._held_lock:
            held, self._held = list(self._held.values()), {}
        for lock in held:
            lock.release()

    # --- public API ---
    def list_steps(self, repo: str) -> list[tuple[int, str]]:
        """(step, commit sha) of every branch named stepN, sorted by step.

        Offline, or with the Hub unreachable, the steps whose revision is in the local cache (maybe none).
        """
        if not self.settings.offline:
            try:
                return self._hub_steps(repo)
            except httpx2.TransportError as e:
                cached = self._cached_steps(repo)
                if not cached:
                    raise self._unreachable(e, f"the list of step branches of {repo}") from None
                return cached
            except (HfHubHTTPError, HFValidationError) as e:
                raise self._hub_error(e, repo) from None
        return self._cached_steps(repo)

    def checkpoint_steps(self, repo: str) -> list[int] | None:
        """The steps `repo` has, to offer and to check specs against: its stepN branches on the Hub (remembered
        for offline use), else the list remembered from an earlier answer, else the built-in list of a known
        repo (variants.builtin_steps). None when nothing complete is known (offline, an unknown repo), or the
        repo has no step branches."""
        if not self.settings.offline:
            try:
                found = self._hub_steps(repo)
                return [s for s, _ in found] or None
            except httpx2.TransportError:
                pass  # unreachable: what is remembered or built in
            except (HfHubHTTPError, HFValidationError) as e:
                raise self._hub_error(e, repo) from None
        remembered = self._remembered_steps(repo)
        if remembered:
            return [s for s, _ in remembered]
        return builtin_steps(repo)

    def resolve_commit(self, repo: str, revision: str | None) -> str:
        """The commit sha of `revision` (None: main). Offline: from the cache's refs/<revision>."""
        rev = revision or "main"
        if _SHA_RE.match(rev):
            return rev
        if self.settings.offline:
            sha = self._cached_refs(repo).get(rev)
            if sha is None:
                raise OfflineMissing(f"offline, and the revision {rev} of {repo} is not in the Hugging Face cache "
                                     f"({self.cache_dir}). {self._fetch_hint(repo, rev)}")
            return sha
        try:
            return str(self._api.resolve_revision(repo, revision=rev, cache_dir=self.cache_dir, token=self._token)
                       .resolved)
        except RevisionResolutionError as e:  # unreachable (or 5xx) and no cached ref
            raise self._unreachable(e.__cause__ or e, f"the revision {rev} of {repo}") from None
        except RevisionNotFoundError:
            raise MissingOnHub(f"{repo} has no revision {rev!r}; {self._nearest_revisions(repo, rev)}") from None
        except (HfHubHTTPError, HFValidationError) as e:
            raise self._hub_error(e, repo, rev) from None

    def list_gguf_files(self, repo: str, revision: str | None = None) -> dict[str, str]:
        """Canonical quant name -> file name of the repo's .gguf files at `revision` (None: main).

        Files whose quant cannot be read from the name are left out. When two files give one quant
        (x.Q4_K.gguf and x.Q4_K_M.gguf), the one spelled canonically wins.
        """
        commit = self.resolve_commit(repo, revision)
        files, _complete = self._list_files(repo, commit, revision)
        out: dict[str, str] = {}
        for name in sorted(files):
            q = quant_from_filename(name)
            if q is None:
                continue
            spelled_canonically = q.lower() in name.lower()
            if q not in out or (spelled_canonically and q.lower() not in out[q].lower()):
                out[q] = name
        return out

    def download(self, repo: str, filename: str, commit: str) -> Path:
        """The local path of `filename` of `repo` at `commit`, downloaded into the HF cache if not there.

        The path is huggingface_hub's snapshot link to a complete blob; a fresh LFS download is checked
        against its sha256 and removed if it does not match. The repo is held (_hold) until release().
        """
        self._hold(repo)
        cached = try_to_load_from_cache(repo, filename, cache_dir=self.cache_dir, revision=commit)
        if isinstance(cached, str):
            self._used(repo, commit)
            return Path(cached)
        what = f"{filename} of {repo}@{self._rev_label(repo, commit)}"
        if self.settings.offline:
            raise OfflineMissing(f"offline, and {what} is not in the Hugging Face cache ({self.cache_dir}). "
                                 f"{self._fetch_hint(repo, commit, filename)}")
        try:
            # A quick HEAD first: with the Hub unreachable, hf_hub_download would back off for ~20 s before failing.
            meta = get_hf_file_metadata(hf_hub_url(repo, filename, revision=commit, endpoint=self.endpoint),
                                        token=self._token, endpoint=self.endpoint)
            path = Path(hf_hub_download(repo, filename, revision=commit, cache_dir=self.cache_dir,
                                        endpoint=self.endpoint, token=self._token))
        except httpx2.TransportError as e:
            raise self._unreachable(e, what, partial=True) from None
        except RemoteEntryNotFoundError:
            raise MissingOnHub(f"{repo}@{self._rev_label(repo, commit)} has no file {filename!r}; "
                               f"{self._what_exists(repo, commit, filename)}") from None
        except LocalEntryNotFoundError as e:  # huggingface_hub gave up reaching the Hub
            raise self._unreachable(e.__cause__ or e, what, partial=True) from None
        except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as e:
            raise self._hub_error(e, repo, commit) from None
        except HfHubHTTPError as e:
            if e.response is not None and e.response.status_code < 500 and e.response.status_code != 429:
                raise self._hub_error(e, repo, commit) from None
            raise HubError(f"downloading {what} failed: the server answered HTTP {e.response.status_code}. Nothing "
                           f"partial was kept; run again to retry, or use --offline with cached files.") from None
        except OSError as e:  # e.g. huggingface_hub's size consistency check after a cut transfer
            raise HubError(f"downloading {what} failed ({e.__class__.__name__}: {str(e).splitlines()[0]}). "
                           f"Nothing partial was kept; run again to retry.") from None
        expected = (meta.etag or "").lower()
        if re.fullmatch(r"[0-9a-f]{64}", expected):  # an LFS file: the etag is its sha256
            got = sha256_file(path)
            if got != expected:
                blob = path.resolve()
                path.unlink(missing_ok=True)
                blob.unlink(missing_ok=True)
                raise HubError(f"downloaded {what}, but its sha256 {got[:16]}… does not match the Hub's "
                               f"{expected[:16]}…; the file was deleted. Run again to retry.")
        self._used(repo, commit)
        return path

    def download_dataset_file(self, repo: str, filename: str, commit: str) -> Path:
        """The local path of `filename` of dataset `repo` at `commit` (huggingface_hub's cache, repo type
        "dataset"), downloaded if not there: the LAMBADA data (lambada.py). Offline, only a cached copy."""
        what = f"{filename} of dataset {repo}@{commit[:12]}"
        self._hold(repo, "dataset")
        cached = try_to_load_from_cache(repo, filename, cache_dir=self.cache_dir, revision=commit, repo_type="dataset")
        if isinstance(cached, str):
            self._used(repo, _snapshot_commit(Path(cached), commit), "dataset")
            return Path(cached)
        if self.settings.offline:
            raise OfflineMissing(f"offline, and {what} is not in the Hugging Face cache ({self.cache_dir}); run "
                                 f"once with network, or give a local file with --lambada-file")
        try:
            get_hf_file_metadata(hf_hub_url(repo, filename, repo_type="dataset", revision=commit,
                                            endpoint=self.endpoint), token=self._token, endpoint=self.endpoint)
            path = Path(hf_hub_download(repo, filename, repo_type="dataset", revision=commit,
                                        cache_dir=self.cache_dir, endpoint=self.endpoint, token=self._token))
        except httpx2.TransportError as e:
            raise self._unreachable(e, what, partial=True) from None
        except LocalEntryNotFoundError as e:
            raise self._unreachable(e.__cause__ or e, what, partial=True) from None
        except RemoteEntryNotFoundError:
            raise MissingOnHub(f"dataset {repo}@{commit[:12]} has no file {filename!r}") from None
        except RepositoryNotFoundError:
            raise MissingOnHub(f"no dataset repo {repo!r} on {self._where()}; check PYTHIA_COMPARE_LAMBADA_REPO, "
                               f"or give a local file with --lambada-file") from None
        except RevisionNotFoundError:
            raise MissingOnHub(f"dataset {repo} has no revision {commit!r}; check "
                               f"PYTHIA_COMPARE_LAMBADA_REVISION") from None
        except (HfHubHTTPError, HFValidationError) as e:
            raise self._hub_error(e, repo, commit) from None
        except OSError as e:
            raise HubError(f"downloading {what} failed ({e.__class__.__name__}: {str(e).splitlines()[0]}). "
                           f"Nothing partial was kept; run again to retry.") from None
        self._used(repo, _snapshot_commit(path, commit), "dataset")
        return path

    def download_checkpoint(self, repo: str, commit: str) -> Path:
        """The snapshot folder of `repo` at `commit` holding config.json, tokenizer.json and the weights.

        Weights, by preference: model.safetensors, sharded safetensors (index + the shards it names),
        pytorch_model.bin, sharded .bin. Only those files are downloaded.
        """
        files, complete = self._list_files(repo, commit, None)
        have = set(files)
        where = f"{repo}@{self._rev_label(repo, commit)}"

        def absent(names: str) -> Exception:
            if not complete:  # we only know what is cached, and it is not there
                return OfflineMissing(f"offline, and {names} of {where} is not in the Hugging Face cache "
                                      f"({self.cache_dir}). {self._fetch_hint(repo, commit)}")
            return MissingOnHub(f"{where} has no {names}, so it is not a checkpoint pythia-compare can convert; "
                                f"it has: {_some(files)}")

        for required in ("config.json", "tokenizer.json"):
            if required not in have:
                raise absent(required)
        weights = next((w for w in WEIGHT_FILES if w in have), None)
        if weights is None:
            raise absent("weights (" + ", ".join(WEIGHT_FILES) + ")")
        wanted = ["config.json", "tokenizer.json", weights]
        if weights.endswith(".index.json"):
            index = self.download(repo, weights, commit)
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, AttributeError, TypeError):
                raise MissingOnHub(f"{where}: {weights} is not a weight index (no weight_map)") from None
            for shard in shards:
                if complete and shard not in have:
                    raise MissingOnHub(f"{where}: {weights} names {shard}, which the repo does not have")
            wanted += shards
        paths = [self.download(repo, name, commit) for name in wanted]
        return paths[0].parent

    # --- listings ---
    def _list_files(self, repo: str, commit: str, revision: str | None) -> tuple[list[str], bool]:
        """Every file of `repo` at `commit`, and whether the list is complete (False: only what is cached).

        A commit's file list never changes, so a remembered one is used first, online or not.
        """
        cached = self._cached_listing(repo, commit)
        if cached is not None and cached[1]:
            return cached
        if not self.settings.offline:
            try:
                files = self._online_files(repo, commit)
                self._remember_listing(repo, commit, files)
                return files, True
            except httpx2.TransportError as e:
                if cached is None:
                    raise self._unreachable(e, f"the file list of {repo}@{revision or commit}") from None
                return cached
            except RevisionNotFoundError:
                raise MissingOnHub(f"{repo} has no revision {revision or commit!r}; "
                                   f"{self._nearest_revisions(repo, revision or commit)}") from None
            except (HfHubHTTPError, HFValidationError) as e:
                raise self._hub_error(e, repo, revision or commit) from None
        if cached is None:
            raise OfflineMissing(f"offline, and nothing of {repo}@{self._rev_label(repo, commit, revision)} is in "
                                 f"the Hugging Face cache ({self.cache_dir}). {self._fetch_hint(repo, commit)}")
        return cached

    def _online_files(self, repo: str, commit: str) -> list[str]:
        # model_info's siblings: one request, no retry loop (list_repo_tree backs off ~20 s when unreachable).
        info = self._api.model_info(repo, revision=commit, timeout=_API_TIMEOUT)
        return sorted(s.rfilename for s in info.siblings or [])

    def snapshot_dir(self, repo: str, commit: str) -> Path:
        """The HF cache folder holding `repo`'s files at `commit` (links to blobs); it may not exist."""
        return self._storage(repo) / "snapshots" / commit

    def _storage(self, repo: str) -> Path:
        return self.cache_dir / ("models--" + repo.replace("/", "--"))

    def _listing_memo(self, repo: str, commit: str) -> Path:
        return Path(self.settings.home).expanduser() / "hub-listings" / repo.replace("/", "--") / f"{commit}.json"

    def _remember_listing(self, repo: str, commit: str, files: list[str]) -> None:
        """Keep the file list of a commit (immutable) so offline runs know what exists."""
        memo = self._listing_memo(repo, commit)
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(memo, json.dumps(sorted(files)))
        except OSError:
            pass  # an optimisation for offline use only

    def _cached_listing(self, repo: str, commit: str) -> tuple[list[str], bool] | None:
        memo = self._listing_memo(repo, commit)
        for source in (memo, self._storage(repo) / "trees" / f"{commit}.json"):  # ours, then huggingface_hub's
            try:
                data = json.loads(source.read_text())
                return (sorted(data) if isinstance(data, list) else sorted(data["files"])), True
            except (OSError, ValueError, KeyError, TypeError):
                continue
        snap = self._storage(repo) / "snapshots" / commit
        if snap.is_dir():
            return sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()), False
        return None

    def _hub_steps(self, repo: str) -> list[tuple[int, str]]:
        """(step, commit sha) of `repo`'s stepN branches as the Hub lists them now, sorted by step; remembered
        for offline use. The Hub's errors propagate."""
        refs = self._api.list_repo_refs(repo)
        found = sorted((int(m.group(1)), b.target_commit) for b in refs.branches if (m := _STEP_RE.match(b.name)))
        self._remember_steps(repo, found)
        return found

    def _remember_steps(self, repo: str, steps: list[tuple[int, str]]) -> None:
        """Keep the repo's complete step list (with commit shas) for offline use; a later answer replaces it."""
        memo = self._listing_memo(repo, "steps")
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(memo, json.dumps([[s, sha] for s, sha in steps]))
        except OSError:
            pass  # an optimisation for offline use only

    def _remembered_steps(self, repo: str) -> list[tuple[int, str]]:
        try:
            data = json.loads(self._listing_memo(repo, "steps").read_text())
            return sorted((int(s), str(sha)) for s, sha in data if _SHA_RE.match(str(sha)))
        except (OSError, ValueError, TypeError):
            return []

    def _cached_steps(self, repo: str) -> list[tuple[int, str]]:
        return sorted((int(m.group(1)), sha) for name, sha in self._cached_refs(repo).items()
                      if (m := _STEP_RE.match(name)))

    def _cached_refs(self, repo: str) -> dict[str, str]:
        """revision name -> commit sha, from the cache's refs/ folder."""
        refs = self._storage(repo) / "refs"
        out = {}
        if refs.is_dir():
            for p in refs.rglob("*"):
                if p.is_file():
                    sha = p.read_text().strip()
                    if _SHA_RE.match(sha):
                        out[p.relative_to(refs).as_posix()] = sha
        return out

    # --- messages ---
    def _rev_label(self, repo: str, commit: str, revision: str | None = None) -> str:
        """'step3000 (commit 1a2b3c4d5e6f)' using the cached refs, or just the commit."""
        names = [revision] if revision and revision != commit else sorted(
            n for n, s in self._cached_refs(repo).items() if s == commit)
        return f"{'/'.join(names)} (commit {commit[:12]})" if names else commit

    def _fetch_hint(self, repo: str, revision: str, filename: str | None = None) -> str:
        names = [n for n, s in self._cached_refs(repo).items() if s == revision]
        rev = names[0] if names else revision
        cmd = f"hf download {repo}" + (f" {filename}" if filename else "") + f" --revision {rev}"
        return (f"Run once without --offline (with network) to fetch it into the cache, or put it there yourself "
                f"(e.g. `{cmd}` with the same cache dir); {_DEMO_HINT}.")

    def _where(self) -> str:
        return "the Hugging Face Hub" if self.endpoint == DEFAULT_ENDPOINT else f"the Hub at {self.endpoint}"

    def _unreachable(self, error: BaseException, what: str, partial: bool = False) -> HubUnreachable:
        reason = str(error).splitlines()[0] if str(error) else error.__class__.__name__
        kept = " Nothing partial was kept." if partial else ""
        return HubUnreachable(f"cannot reach {self._where()} ({reason}), and {what} is not in the local cache.{kept} "
                              f"Check the network and run again, or run with --offline to use only cached files, "
                              f"{_DEMO_HINT}.")

    def _hub_error(self, e: Exception, repo: str, revision: str | None = None) -> HubError:
        if isinstance(e, HFValidationError):
            return MissingOnHub(f"{repo!r} is not a valid Hub repo id; use owner/name, e.g. EleutherAI/pythia-410m")
        if isinstance(e, GatedRepoError):
            told = " The token given does not have access to it." if self.settings.hf_token else ""
            return HubError(f"{repo} is gated: accept its terms on its Hub page, then set HF_TOKEN to a token with "
                            f"read access.{told}")
        if isinstance(e, RepositoryNotFoundError):
            hint = ("(or the token given cannot see it)" if self.settings.hf_token
                    else "(if it is private, set HF_TOKEN to a token that can read it)")
            return MissingOnHub(f"no model repo {repo!r} on {self._where()}; check the name {hint}")
        if isinstance(e, RevisionNotFoundError):
            return MissingOnHub(f"{repo} has no revision {revision!r}; {self._nearest_revisions(repo, revision or '')}")
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            told = "the token given was refused" if self.settings.hf_token else "a token is needed"
            return HubError(f"{self._where()} refused access to {repo} (HTTP {status}): {told}; set HF_TOKEN to a "
                            f"token with read access to it")
        if status == 429:
            return HubError(f"{self._where()} is rate-limiting requests (HTTP 429); wait a minute and run again, or "
                            f"use --offline with cached files")
        return HubError(f"{self._where()} answered HTTP {status} for {repo}; try again later, or run with --offline "
                        f"to use only cached files, {_DEMO_HINT}")

    def _nearest_revisions(self, repo: str, revision: str) -> str:
        """'the nearest are step1000, step2000 (154 stepN branches, step0 … step143000)', or some branch names."""
        try:
            names = [b.name for b in self._api.list_repo_refs(repo).branches]
        except (HfHubHTTPError, httpx2.TransportError):
            return "list its branches on the Hub page"
        steps = sorted(int(m.group(1)) for n in names if (m := _STEP_RE.match(n)))
        others = sorted(n for n in names if not _STEP_RE.match(n))
        m = _STEP_RE.match(revision)
        if steps:
            span = f"{len(steps)} stepN branches, step{steps[0]} … step{steps[-1]}"
            if m:
                want = int(m.group(1))
                near = sorted(sorted(steps, key=lambda s: (abs(s - want), s))[:2])
                return f"the nearest are {', '.join(f'step{s}' for s in near)} ({span})"
            return f"it has {', '.join(others) or 'no other branches'} and {span}"
        return f"its branches are: {', '.join(others) or 'none'}"

    def _what_exists(self, repo: str, commit: str, filename: str) -> str:
        try:
            files = self._online_files(repo, commit)
        except (HfHubHTTPError, httpx2.TransportError):
            return "see its file list on the Hub page"
        if filename.lower().endswith(".gguf"):
            quants = sorted({q for f in files if (q := quant_from_filename(f))}, key=quant_rank)
            return f"its GGUF quants are: {', '.join(quants) or 'none'}"
        return f"it has: {_some(files)}"


# ------------------------------------------------------------------------------------------ the cache budget's view
def _repo_folder(repo_type: str, repo: str) -> str:
    """huggingface_hub's folder name of a repo in its cache: models--org--name, datasets--org--name."""
    return f"{repo_type}s--" + repo.replace("/", "--")


def _snapshot_commit(path: Path, given: str) -> str:
    """The commit of the snapshot folder holding `path` (a file of huggingface_hub's cache), else `given`: a
    revision named by a branch (PYTHIA_COMPARE_LAMBADA_REVISION=main) is recorded by the commit it resolved to."""
    for folder in path.parents:
        if folder.parent.name == "snapshots":
            return folder.name
    return given


def _use_lock(cache_dir: Path, folder: str) -> Path:
    return cache_dir.joinpath(*_USE_DIR, f"{folder}.lock")


def _use_record(cache_dir: Path, folder: str, commit: str) -> Path:
    return cache_dir.joinpath(*_USE_DIR, folder, commit)


def _record_use(cache_dir: Path, repo_type: str, repo: str, commit: str) -> None:
    """Write (or touch) the use record of repo@commit: the cache budget counts that revision from now on, with now
    as its last use (HfCache). Never raises: a record that cannot be written only leaves the revision uncounted."""
    record = _use_record(cache_dir, _repo_folder(repo_type, repo), commit)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.touch()
        os.utime(record)  # an existing record: its time becomes now
    except OSError as e:
        log.debug("cannot record the use of %s@%s in %s: %s", repo, commit[:12], cache_dir, e)


@dataclass(frozen=True)
class HfRevision:
    """One revision (a commit) of a repo in huggingface_hub's cache that pythia-compare used."""
    repo_type: str  # "model" or "dataset"
    repo: str
    commit: str
    refs: tuple[str, ...]  # branch names pointing at it (step3000, main), as the cache's refs/ knows them
    files: tuple[str, ...]  # the file names of its snapshot
    bytes: int  # its files' blobs (blobs another revision shares are counted in both)
    last_used: float  # when a run last used it (see HfCache)
    repo_path: Path  # the repo's folder in the cache
    blobs: tuple[tuple[Path, int], ...] = field(default=(), repr=False)  # (blob path, bytes) of its files


class HfCache:
    """huggingface_hub's cache (Settings.hf_cache_dir) as the cache budget counts it: the revisions pythia-compare
    used, read and deleted through huggingface_hub's own cache API (scan_cache_dir, delete_revisions).

    - **Which revisions.** Those with a use record: Hub.use writes one for every revision a run downloads or reads
      (GGUF files, checkpoint files, the LAMBADA dataset), as an empty file
      `<cache>/.locks/pythia-compare/<repo folder>/<commit>` (huggingface_hub's scan skips `.locks`). Everything
      else in the cache (other projects' models, the run backup's dataset) is neither counted nor deleted: the
      cache is shared with every Hugging Face tool on the machine.
    - **When a revision was used.** The latest of its use record's modification time, set at every use, and its
      files' access and modification times as huggingface_hub's scan reports them. The record is what counts:
      access times are not updated on a noatime filesystem (and only daily on a relatime one), and a run that
      finds its files cached reads them without writing anything else.
    - **In use.** A run holds its repo's use lock (`<repo folder>.lock` beside the records) from before it looks
      at the cache until its end. `remove` takes that lock alone, or leaves the repo be: a download in progress
      or a checkpoint being converted is never pulled from under a run, and neither is the pinned LAMBADA revision
      a LAMBADA run reads. A download by any other tool is seen by huggingface_hub's own lock on the file.
    Never downloads and never raises for a cache folder that is missing, empty or not a folder.
    """

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir).expanduser()

    def revisions(self) -> list[HfRevision]:
        """The revisions pythia-compare used that the cache holds, most recently used first."""
        out = []
        for repo in self._scan_repos():
            folder = repo.repo_path.name
            for rev in repo.revisions:
                record = _use_record(self.cache_dir, folder, rev.commit_hash)
                try:
                    recorded = record.stat().st_mtime
                except OSError:
                    continue  # not one pythia-compare used
                times = [recorded] + [max(f.blob_last_accessed, f.blob_last_modified) for f in rev.files]
                out.append(HfRevision(repo.repo_type, repo.repo_id, rev.commit_hash, tuple(sorted(rev.refs)),
                                      tuple(sorted(f.file_name for f in rev.files)), int(rev.size_on_disk),
                                      max(times), repo.repo_path,
                                      tuple(sorted((f.blob_path, int(f.size_on_disk)) for f in rev.files))))
        return sorted(out, key=lambda r: r.last_used, reverse=True)

    def total_bytes(self, revisions: list[HfRevision] | None = None) -> int:
        """The bytes those revisions hold on disk, each blob once (revisions of one repo share unchanged files)."""
        revisions = self.revisions() if revisions is None else revisions
        return sum(dict(b for r in revisions for b in r.blobs).values())

    def remove(self, revision: HfRevision) -> int | None:
        """Delete one revision through huggingface_hub (its snapshot, its refs, the blobs no other revision of the
        repo links; the repo's folder once it has no revision left); the bytes freed, or None when it was left:
        a run holds its repo's use lock, or some download into the repo is under way."""
        folder = revision.repo_path.name
        guard = UseLock(_use_lock(self.cache_dir, folder))
        try:
            if not guard.take():
                return None  # a run is using this repo
        except OSError:
            return None  # the lock cannot even be made: this cache is not ours to change
        downloads: list[FileLock] = []
        try:
            for path in sorted(self.cache_dir.joinpath(".locks", folder).glob("*.lock")):
                lock = FileLock(str(path))
                try:
                    lock.acquire(timeout=0)
                except (Timeout, NotImplementedError):  # huggingface_hub is downloading a file of this repo (for
                    return None  # anyone), or this filesystem cannot tell: hands off
                downloads.append(lock)
            try:
                info = scan_cache_dir(self.cache_dir)
            except (CacheNotFound, ValueError, OSError):
                return None
            if not any(r.commit_hash == revision.commit for repo in info.repos if repo.repo_path == revision.repo_path
                       for r in repo.revisions):
                return None  # gone already
            strategy = info.delete_revisions(revision.commit)
            strategy.execute()
            _use_record(self.cache_dir, folder, revision.commit).unlink(missing_ok=True)
            return int(strategy.expected_freed_size)
        finally:
            for lock in downloads:
                lock.release()
            guard.release()

    def _scan_repos(self) -> list:
        """huggingface_hub's scan of the cache's repos ([] for a missing, empty or unreadable cache folder); a repo
        the scan calls corrupted (one whose first download is under way has no snapshot yet) is left out."""
        if not self.cache_dir.is_dir():
            return []
        try:
            return list(scan_cache_dir(self.cache_dir).repos)
        except (CacheNotFound, ValueError, OSError) as e:
            log.debug("cannot scan the Hugging Face cache %s: %s", self.cache_dir, e)
            return []


def _some(names: list[str], limit: int = 12) -> str:
    names = sorted(names)
    if not names:
        return "no files"
    more = f" … and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ------------------------------------------------------------------------------------------ the backup dataset
class BackupError(HubError):
    """The backup dataset cannot be read or written: no token, a refused or read-only token, a bad repo id,
    an unreachable Hub or an HTTP error. The message says which, and what would work; it never holds the token."""


@dataclass(frozen=True)
class DatasetSnapshot:
    """A backup dataset as it stands: its main commit, whether it is private, its files (all empty if absent)."""
    exists: bool
    commit: str | None = None
    private: bool | None = None
    files: tuple[str, ...] = ()


class _DatasetApi(HfApi):
    """HfApi whose create_repo asks the Hub only about a repo not already seen to exist.

    CommitScheduler calls create_repo(exist_ok=True) when it starts. For a repo that exists and a token that may
    not create repos (403), huggingface_hub 2.4.0 then builds the repo's URL on its default endpoint and fails
    on any other one; and asking is needless when the dataset was just read."""
    existing: frozenset = frozenset()

    def create_repo(self, repo_id: str, **kwargs):
        if repo_id in self.existing and kwargs.get("exist_ok"):
            return RepoUrl(f"{self.endpoint}/datasets/{repo_id}", endpoint=self.endpoint)
        return super().create_repo(repo_id, **kwargs)


class _Pusher(CommitScheduler):
    """huggingface_hub's CommitScheduler, remembering whether its last push worked (for the page's status)."""
    last_error: str | None = None  # class defaults: the scheduler's thread pushes before __init__ returns
    last_success: float | None = None
    describe: Callable[[BaseException], str] = staticmethod(lambda e: type(e).__name__)

    def push_to_hub(self):
        try:
            info = super().push_to_hub()
        except Exception as e:
            self.last_error = self.describe(e)
            raise
        self.last_error, self.last_success = None, time.time()
        return info


class BackupDataset:
    """The Hub dataset repo that backup.py keeps runs in: read it whole for a restore, push a local folder to it.

    Every call names the endpoint and token of Settings explicitly (type "dataset"). Pushing uses
    huggingface_hub's CommitScheduler: it creates the repo private when absent, then commits the folder's
    new or grown files every `minutes` on its own thread. `lock` is the scheduler's lock: hold it while
    appending to a file, so no push reads half a line.
    """

    def __init__(self, settings: Settings, repo: str):
        self.settings, self.repo = settings, repo
        self.endpoint = settings.hub_endpoint.rstrip("/")
        self._token: str | bool = settings.hf_token or False
        self._api = _DatasetApi(endpoint=self.endpoint, token=self._token, library_name="pythia-compare")
        self._pusher: _Pusher | None = None
        self.lock = threading.Lock()  # the scheduler's own lock once pushing

    @property
    def url(self) -> str:
        return f"{self.endpoint}/datasets/{self.repo}"

    def snapshot(self) -> DatasetSnapshot:
        """The dataset's main commit, visibility and file list; exists=False when there is no such dataset."""
        try:
            info = self._api.dataset_info(self.repo, timeout=_API_TIMEOUT, token=self._token)
        except RepositoryNotFoundError:
            return DatasetSnapshot(False)
        except (HfHubHTTPError, HFValidationError, httpx2.TransportError) as e:
            raise self._error(e, "read") from None
        self._api.existing = self._api.existing | {self.repo}
        return DatasetSnapshot(True, info.sha, bool(info.private), tuple(sorted(s.rfilename for s in info.siblings or [])))

    def download(self, filename: str, commit: str) -> Path:
        """The local path of one file of the dataset at `commit` (huggingface_hub's cache). The revision is
        recorded as used, so the cache budget counts the backup's copies too (a restore reads them once, at start;
        a pruned one is fetched again by the next restore)."""
        try:
            path = Path(hf_hub_download(self.repo, filename, repo_type="dataset", revision=commit,
                                        cache_dir=self.settings.hf_cache_dir, endpoint=self.endpoint,
                                        token=self._token, etag_timeout=_API_TIMEOUT))
        except (HfHubHTTPError, HFValidationError, httpx2.TransportError, LocalEntryNotFoundError, OSError) as e:
            raise self._error(e, f"download {filename} of") from None
        _record_use(Path(self.settings.hf_cache_dir).expanduser(), "dataset", self.repo, _snapshot_commit(path, commit))
        return path

    def start_pushing(self, folder: Path, path_in_repo: str, minutes: float) -> None:
        """Create the dataset (private) if absent and push `folder` to `path_in_repo` now and every `minutes`.

        The first push happens before this returns, so a token without write access is found out here."""
        try:
            self._pusher = _Pusher(repo_id=self.repo, folder_path=folder, every=minutes, path_in_repo=path_in_repo,
                                   repo_type="dataset", private=True, hf_api=self._api)
        except (HfHubHTTPError, HFValidationError, httpx2.TransportError, ValueError) as e:
            raise self._error(e, "create") from None
        self._pusher.describe = lambda e: self._error(e, "write to").args[0]
        self.lock = self._pusher.lock
        self.push()

    def push(self, timeout: float | None = 120.0) -> None:
        """Push the folder's changes now, after any push already queued; BackupError if it fails."""
        if self._pusher is None:
            raise BackupError(f"the backup to {self.repo} is not running")
        try:
            self._pusher.trigger().result(timeout)
        except Exception as e:  # noqa: BLE001 - whatever huggingface_hub raised, said plainly
            raise self._error(e, "write to") from None

    @property
    def last_error(self) -> str | None:
        """Why the last push failed (None: it worked, or none has run)."""
        return self._pusher.last_error if self._pusher is not None else None

    def close(self, timeout: float = 60.0, final: bool = True) -> None:
        """Stop the schedule and push what is left (at shutdown; not when `final` is False); BackupError if that
        last push fails."""
        pusher, self._pusher = self._pusher, None
        if pusher is None:
            return
        last = getattr(pusher, "last_future", None)
        pusher.stop()
        if not final:
            return
        if last is not None:
            try:
                last.result(timeout)  # a push under way finishes first (its error, if any, was recorded)
            except Exception:  # noqa: BLE001
                pass
        try:
            pusher.push_to_hub()  # directly: at interpreter exit the scheduler's executor takes no more work
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "write to") from None

    def _error(self, e: BaseException, action: str) -> BackupError:
        repo, where = self.repo, ("the Hugging Face Hub" if self.endpoint == DEFAULT_ENDPOINT
                                  else f"the Hub at {self.endpoint}")
        if isinstance(e, BackupError):
            return e
        if isinstance(e, HFValidationError):
            return BackupError(f"{repo!r} is not a valid dataset id; set PYTHIA_COMPARE_BACKUP_REPO to owner/name")
        if isinstance(e, httpx2.TransportError) or isinstance(e.__cause__, httpx2.TransportError):
            return BackupError(f"cannot reach {where} to {action} the dataset {repo} ({type(e).__name__})")
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 401:
            return BackupError(f"{where} refused the token in HF_TOKEN (HTTP 401) when asked to {action} the dataset "
                               f"{repo}: it is invalid or expired; set HF_TOKEN to a token with write access")
        if status == 403:
            return BackupError(f"the token in HF_TOKEN may not {action} the dataset {repo} (HTTP 403); give it write "
                               f"access to {repo} (a write token, or a fine-grained one with write access to that "
                               f"repo or its namespace)")
        if isinstance(e, RepositoryNotFoundError) or status == 404:
            return BackupError(f"no dataset {repo} on {where} that the token in HF_TOKEN can see (HTTP {status}); "
                               f"check PYTHIA_COMPARE_BACKUP_REPO and the token's access")
        if status is not None:
            return BackupError(f"{where} answered HTTP {status} when asked to {action} the dataset {repo}")
        first = str(e).splitlines()[0] if str(e) else ""
        return BackupError(f"could not {action} the dataset {repo} ({type(e).__name__}{': ' + first if first else ''})")
