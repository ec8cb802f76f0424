"""Run mutmut over the contract modules and write the survivors to bench/mutation.md.

    python scripts/mutation.py [MODULE ...]    default: every module in MODULES

Each module is mutated with only its own fast tests. The report keeps one section
per module, so a run over some modules leaves the others' sections as they were.
A survivor whose change is confined to a log call is classed "log only" (logs are
diagnostics, not part of the exit-code and output contract); every other
survivor is listed with its diff and, where one is known, why it is equivalent.
When a row is done, no process it started is left: mutmut runs in a process group
of its own, ended after it (see _end_group), and the emulators the row started
are stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.emulator import SHARED_ENV, LocalServe, start_local_serve  # noqa: E402

REPORT = REPO / "bench" / "mutation.md"

# module -> the fast tests that state its contract
MODULES: dict[str, list[str]] = {
    "archive": ["tests/unit/test_archive.py"],
    "pack": ["tests/unit/test_pack.py"],
    "errors": ["tests/unit/test_errors.py"],
    # What the fan-out maps under an input prefix (the empty-input check rests on it).
    "dataobjects": ["tests/unit/test_dataobjects.py"],
    "custom": ["tests/unit/test_custom.py"],
    "scriptoutputs": ["tests/unit/test_custom.py"],
    "publish": [
        "tests/unit/test_publish.py",
        "tests/unit/test_publish_contract.py",
        "tests/unit/test_stop.py",
        # publish() in-process against the session's moto server: S3 leases, the
        # rollback of a failed create, a twin attempt's commit (the subprocess tests
        # of that file run an unmutated dsjob, so they stay out)
        *(
            f"tests/integration/test_publish_failures.py::{name}"
            for name in (
                "test_a_failed_create_on_a_name_another_run_holds_leaves_that_object",
                "test_a_failed_create_whose_owner_cannot_be_asked_leaves_that_object",
                "test_a_create_whose_answer_is_lost_is_still_rolled_back",
                "test_a_twin_that_committed_first_is_reported_when_this_manifest_write_fails",
                "test_a_twin_that_committed_first_is_reported_when_this_upload_fails",
                "test_a_many_part_output_asks_before_it_uploads_and_a_one_part_output_just_tries",
                "test_a_manifest_stored_whose_answer_is_lost_commits_the_run_and_keeps_its_outputs",
                "test_a_manifest_that_cannot_be_read_back_keeps_everything_and_the_retry_reports_it",
                "test_an_upload_failing_while_manifests_cannot_be_read_still_rolls_back",
            )
        ),
    ],
    # The rest of the publish contract: what is committed, kept and deleted.
    "history": [
        "tests/unit/test_history.py",
        "tests/unit/test_publish.py",
        "tests/unit/test_publish_contract.py",
        "tests/integration/test_pointer_s3.py",
    ],
    "commit": [
        "tests/unit/test_commit.py",
        "tests/unit/test_publish.py",
        "tests/unit/test_publish_contract.py",
        "tests/unit/test_stop.py",
        "tests/unit/test_lease.py",
        # the manifest's read-back and Content-Type on moto
        "tests/integration/test_commit_s3.py",
        "tests/integration/test_verify_s3.py::test_the_manifest_names_each_outputs_stored_etag_version_and_size",
    ],
    "verify": [
        "tests/unit/test_publish.py",
        "tests/unit/test_publish_contract.py",
        # the checksums S3 (moto) computed, in-process: full-object, composite as S3's
        # HEAD spells it and as moto's does, bent parts, the manifest's ETag and version
        "tests/integration/test_verify_s3.py",
        "tests/integration/test_publish_failures.py::test_a_composite_checksum_is_recomputed_from_the_parts",
    ],
    "orphans": [
        "tests/unit/test_orphans.py",
        "tests/unit/test_lease.py",
        "tests/unit/test_publish.py",
        "tests/unit/test_publish_contract.py",
        # claims on moto: won, lost to a rewrite before the read, lost to one before the PUT
        "tests/integration/test_lease_s3.py",
    ],
    "lease": [
        "tests/unit/test_lease.py",
        "tests/unit/test_publish.py",
        "tests/unit/test_publish_contract.py",
        "tests/unit/test_stop.py",
        # heartbeats and a claim racing a rewrite, on moto's If-Match and ETags
        "tests/integration/test_lease_s3.py",
    ],
    # In-process against moto servers the run starts once (SHARED_EMULATOR), one per
    # worker, so the mutants run two at a time on 2 cores instead of one. With one
    # shared server and the full seed per test, s3store had tried 155 of its 484
    # mutants after 4.5 min at load 9-14 (the slow ones last); now both rows take ~6
    # min. These tests seed only the output bucket (the bare_aws fixture), and the
    # 1,001-key delete test PUTs 4 keys, not 1,002. The publish tests that run a
    # `dsjob` subprocess (test_publish_conflicts.py) stay out: the subprocess imports
    # the unmutated dsjob, so they cannot kill a mutant; test_s3store.py states the
    # same 409 behaviour in-process.
    "s3store": ["tests/integration/test_s3store.py"],
    "multipart": ["tests/integration/test_s3store.py"],
    "config": [
        "tests/unit/test_config.py",
        "tests/unit/test_resolve.py",
        "tests/unit/test_preflight.py",
        # read_parameters against real SSM; each test process starts its own moto server
        "tests/integration/test_ssm_parameters.py",
    ],
    "cli": ["tests/unit/test_exit_codes.py"],
}
# Extra pytest arguments per module. The setsid-escape tests leave orphans that
# mutmut's own process pool would reap as unknown workers (and crash), so they
# stay out; tests/unit/test_custom.py and the integration tests cover them.
PYTEST_ARGS: dict[str, list[str]] = {
    "custom": ["-k", "not grandchild"],
    "scriptoutputs": ["-k", "not grandchild"],
}
KEEP = REPO / ".cache" / "mutation"
# Modules whose tests need the moto server: one `dsjob local serve` per mutmut worker,
# started once for all the module's mutants.
# (publish: its in-process tests take one too; the row ran in 312 s, was 331 s with
# 121 fewer mutants and an emulator per test session.)
SHARED_EMULATOR = frozenset({"s3store", "multipart", "publish"})
# Only these functions of a module count (the CLI's exit-code edge, not its help text).
FOCUS: dict[str, tuple[str, ...]] = {"cli": ("x_main__", "x__fail__", "x__status__")}
# Reasons shared by several equivalent mutants of one line.
_LEASE_LAST = (
    "a lease key's last '/' piece is the same for any number of right splits "
    "([+1] of a one-split pair is its last)"
)
_LEASE_SEQ = (
    "the counter only has to change on every write (a new ETag); its start and step are never read"
)
_MANIFEST_LAYOUT = "the manifest's indentation is layout; readers parse the JSON"
_POINTER_REREAD = (
    "without the pointer as read, history.record reads it itself: one GET more, and a "
    "pointer moved meanwhile is read again either way (record retries after a 412)"
)
_LEASE_GONE = (
    "a run deletes its lease only after its commit (its objects are then kept by the "
    "manifest check) or after removing its uploads (none left), so the verdict changes nothing"
)
_SETTLE_NONE = (
    "_settle treats every state but ours, unknown and twin as none (roll back, re-raise), "
    "so another string is none"
)
_VERDICT = "find() treats every verdict but live and unknown alike"
_LEASE_NAME = "the heartbeat thread's name is for debuggers only"
_LEASE_DAEMON = (
    "every path out of publish() after start() calls stop(), which ends and joins the "
    "thread, so its daemon flag never matters"
)
_LEASE_ASK = (
    "asks S3 before the manifest more often (or always): one more PUT, the same verdict "
    "on the lease"
)
# Survivors known to be equivalent: (module, a substring of the original line, or "+"
# and a substring of the mutated one) -> reason.
EQUIVALENT: dict[tuple[str, str], str] = {
    ("archive", 'use_data_filter=hasattr(tarfile, "data_filter")'): (
        "which extraction path runs is not observable: both give the same files, contents and "
        "file modes, and directories the owner can enter and no one else can write (tested on both)"
    ),
    ("archive", 'member = getattr(exc, "tarinfo", None)'): (
        "unreachable: the header checks are stricter than the data filter, so no FilterError"
    ),
    ("archive", 'raise UnsafeArchiveError(getattr(member, "name", "?")'): (
        "unreachable: the header checks are stricter than the data filter, so no FilterError"
    ),
    ("archive", 'tarfile.open(archive, "r:*")'): "tarfile's default mode 'r' is 'r:*'",
    ("pack", "format=tarfile.PAX_FORMAT"): "PAX is tarfile's DEFAULT_FORMAT",
    ("pack", "compresslevel=9"): "9 is GzipFile's default compresslevel",
    ("archive", "tar.extractall(root, members=members"): (
        "every member was checked, so extracting the checked list or all members is the same"
    ),
    ("pack", "return sorted(found, key="): (
        "any fixed order keeps the archive reproducible, which is the contract"
    ),
    ("archive", "member.uid = member.gid"): (
        "ownership is applied only when extracting as root; the job runs as a non-root user"
    ),
    ("archive", 'member.uname = member.gname = ""'): (
        "ownership is applied only when extracting as root; the job runs as a non-root user"
    ),
    ("archive", '"\\x00" in name'): "a tar header cannot carry a NUL in a name",
    ("archive", "dest.mkdir(parents=True"): "the job's work dir always has its parent",
    ("archive", "return repr(member.type)"): "unreachable: every tar member type is named above",
    ("archive", 'return "'): "names the member type in a message (wording)",
    ("publish", 'return stem, (dot + ext) if dot else ""'): (
        "a name without a dot has an empty extension either way"
    ),
    ("publish", "json.dumps(body, indent=2"): (
        "the manifest's indentation is layout; readers parse the JSON (default=str is listed apart)"
    ),
    ("publish", "raise history.AlreadyCommittedError(run_id)"): (
        "publish() catches it and reports the committed run; its message is never shown"
    ),
    ("publish", "digests=digests"): (
        "without the precomputed digests upload_verified computes the same ones again"
    ),
    ("publish", "checkpoint=checkpoint,"): (
        "every caller (job, fan-out commit) passes the default stop.checkpoint"
    ),
    ("publish", 'checkpoint("before writing the run manifest")'): (
        "names the stop point in a log line only"
    ),
    ("publish", '"earlier outputs kept"'): "rewords an error; its class and names stay",
    ("publish", "no attempt token: nothing marks"): (
        "unreachable from publish(), which always sends the attempt's token"
    ),
    ("publish", "held.stop(release=False)"): (
        "release=None is False; release=True deletes the committed run's lease one request "
        "early, and the same key is in finish()'s DeleteObjects (a missing key deletes fine)"
    ),
    ("publish", "+already_published(store, prefix, run_id, None)"): (
        "only after a twin committed, and the twin ran the same prune; a pending one is "
        "finished by the dataset's next run (the pointer's pending deletes)"
    ),
    ("publish", 'manifest.get("outputs", [])'): (
        "every manifest dsjob writes (format 1) has an outputs list"
    ),
    ("publish", 'stored.get("outputs", [])'): (
        "every manifest dsjob writes (format 1) has an outputs list (commit.write_manifest)"
    ),
    ("publish", "sent.append(True)"): (
        "publish reads bool(sent), whether the list has an element: any element marks it"
    ),
    ("publish", 'state = "none"  # no manifest'): _SETTLE_NONE,
    ("publish", 'return "none", {}'): _SETTLE_NONE,
    ("publish", 'return "unknown", stored'): (
        "only a manifest whose outputs lack a key or an etag gets here; every manifest "
        "dsjob writes lists asdict(Published), which has both (commit.write_manifest)"
    ),
    ("publish", 'else "unknown"), stored'): (
        "unreachable: a manifest lists either exactly this attempt's outputs (its own, "
        "'ours') or none of them; outputs are created with If-None-Match, so no other "
        "attempt's manifest can list a key this attempt created"
    ),
    ("publish", "+held.stop(release=None)  # the lease keeps"): (
        "Lease.stop tests release for truth: None is False"
    ),
    ("publish", "return False  # their lease stays"): (
        "rollback runs only when no manifest lists the uploads (before the create, no "
        "manifest, or a twin's): released now or expired later, the lease lets the next "
        "run's orphan removal take them, so only the timing changes"
    ),
    ("config", "out: S3Location | Path | None = None"): (
        "every path that leaves the output unset records a missing parameter, which raises"
    ),
    ("config", "inp: Location | None = None"): (
        "every path that leaves the input unset records a missing parameter, which raises"
    ),
    ("config", "if problems or inp is None or out is None:"): (
        "an unset input or output always comes with a problem recorded, so it raises either way"
    ),
    ("config", "default=3600.0"): (
        "the fallback comes back only with a problem recorded, and a problem always raises"
    ),
    ("config", "number = minimum - 1"): "any value below the minimum records the same problem",
    ("custom", "if returncode < 0:"): (
        "only a script that failed (a non-zero returncode) reaches the message, so 0 never does"
    ),
    ("commit", 'if "dataset" in manifest and "committed_at" in manifest:'): (
        "a manifest has both keys (every one dsjob writes) or neither (the older form), so "
        "'and' and 'or' agree on each"
    ),
    ("dataobjects", 'key.rsplit("/", 1)[-1]'): (
        "the last piece of a split from the right is the same for any number of splits"
    ),
    ("config", 'location.key.rsplit("/", 1)[-1]'): (
        "the last piece of a split from the right is the same for any number of splits"
    ),
    ("config", "paginate(Path=prefix, Recursive=False"): (
        "Recursive defaults to false in GetParametersByPath (SSM API Reference), moto too"
    ),
    ("config", 'page.get("Parameters", [])'): (
        "every GetParametersByPath page carries a Parameters list, empty when nothing matches"
    ),
    ("config", '("ssm", ssm_values.get(param.name) if param.ssm else None)'): (
        "a per-run name found in SSM is always a problem, so whether its value was taken is unseen"
    ),
    (
        "history",
        "json.dumps(body, indent=2)",
    ): "the pointer's indentation is layout; readers parse it",
    ("history", "json.dumps(pointer, indent=2)"): (
        "the pointer's indentation is layout; readers parse it"
    ),
    (
        "history",
        'str(r.get("committed_at", ""))',
    ): "every history entry dsjob writes has committed_at",
    ("history", 'manifest.get("outputs", [])'): "every manifest dsjob writes has an outputs list",
    ("history", 'if newest["run_id"] != run_id:'): "decides only whether a log line is written",
    ("archive", "member.mode = (member.mode & 0o755) | stat.S_IRWXU"): (
        "only `member.mode = None` survives: tarfile 3.11.4+ creates such a directory with "
        "the default mode, as the data filter does; on 3.11.2, which runs this path in the "
        "images, chmod(None) raises TypeError and test_directories_are_open_to_their_owner_"
        "and_closed_to_writers fails (checked by hand with /usr/bin/python3)"
    ),
    ("archive", 'PurePosixPath(name).parts if part != "."'): (
        "PurePosixPath already drops '.' parts, so the filter never sees one"
    ),
    ("pack", '+Metadata={"SHA256": digest}'): (
        "S3 keeps user-metadata keys in lower case (x-amz-meta-*): it reads back as sha256"
    ),
    ("pack", '.decode("ascii")'): "Python's codec names are case-insensitive",
    ("pack", 'tempfile.mkdtemp(prefix="dsjob-pack-")'): (
        "the temporary directory's name is not part of the result"
    ),
    ("pack", 'if not (src_dir / "__init__.py").is_file():'): (
        "decides only whether a warning is logged"
    ),
    ("pack", "if self.script_path is not None and self.script_sha256 is not None:"): (
        "pack sets the script's path and digest together, never one alone"
    ),
    ("verify", "accepted = set()"): (
        "accepted is read only when the store reported a checksum; this branch is the one "
        "where it reported none"
    ),
    ("verify", 'elif info.checksum_type == "FULL_OBJECT":'): (
        "a FULL_OBJECT answer then meets the else branch, which also accepts the full CRC32; "
        "it lets a wrong body through only if its CRC32 equals this file's composite value, "
        "a 2**-32 chance, the same as a collision with the full value that any CRC32 check has"
    ),
    ("verify", '+composite.partition("-")[0]'): (
        "base64 has no '-', so the composite's first '-' is its last: partition = rpartition"
    ),
    ("verify", "+computed here {'XX or XX'.join"): "rewords an error; its class and key stay",
    ("verify", "+computed here {' OR '.join"): "rewords an error; its class and key stay",
    ("lease", '+key.rsplit("/", 2)[-1]'): _LEASE_LAST,
    ("lease", '+key.rsplit("/", )[-1]'): _LEASE_LAST,
    ("lease", '+key.rsplit("/", 1)[+1]'): _LEASE_LAST,
    ("lease", '+self._etag: str | None = ""'): "start() sets the ETag before anything reads it",
    ("lease", "self._sent = 0.0"): (
        "read only in confirm() once the ETag is set, and the write that sets the ETag sets it"
    ),
    ("lease", "self._seq = 0"): _LEASE_SEQ,
    ("lease", "+self._seq -= 1"): _LEASE_SEQ,
    ("lease", "+self._seq += 2"): _LEASE_SEQ,
    ("lease", 'self._lost = ""'): (
        "only its truth is read until a loss sets a message: None and '' are both false"
    ),
    ("lease", "self._thread: threading.Thread | None = None"): (
        "stop() runs only after start() set the thread: publish() starts the lease before "
        "its try block"
    ),
    ("lease", "+name=None, daemon=True"): _LEASE_NAME,
    ("lease", "+target=self._beat, daemon=True"): _LEASE_NAME,
    ("lease", "+XXdsjob-leaseXX"): _LEASE_NAME,
    ("lease", "+DSJOB-LEASE"): _LEASE_NAME,
    ("lease", '+name="dsjob-lease", daemon=None'): _LEASE_DAEMON,
    ("lease", '+name="dsjob-lease", daemon=False'): _LEASE_DAEMON,
    ("lease", '+name="dsjob-lease", )'): _LEASE_DAEMON,
    ("lease", "+recent = None"): _LEASE_ASK,
    ("lease", "+self._etag is None and time.monotonic()"): _LEASE_ASK,
    ("lease", "+time.monotonic() + self._sent"): _LEASE_ASK,
    ("lease", "+self.ttl_s / 3"): _LEASE_ASK,
    ("lease", "+time.monotonic() - self._sent <= self.ttl_s / 2"): (
        "differs only when the float seconds since the last write equal half the lease time"
    ),
    ("lease", "+if self._thread is None:"): (
        "without the join the beat thread still stops at its next wait, and a beat in flight "
        "writes If-Match, which cannot bring back a deleted (404) or claimed (412) lease"
    ),
    ("commit", 'manifest.get("outputs", [])'): (
        "every manifest dsjob writes (format 1) has an outputs list"
    ),
    ("commit", "+json.dumps(body, indent=None, default=str)"): _MANIFEST_LAYOUT,
    ("commit", "+json.dumps(body, default=str)"): _MANIFEST_LAYOUT,
    ("commit", "+json.dumps(body, indent=3, default=str)"): _MANIFEST_LAYOUT,
    ("commit", "last=found.pointer"): _POINTER_REREAD,
    ("orphans", "return Found((), (), read)"): (
        "unreachable: find() runs after this run's outputs and lease are stored under the "
        "prefix, so the listing is never empty"
    ),
    ("orphans", "+tuple(verdicts.claimed), None)"): _POINTER_REREAD,
    ("orphans", "+tuple(verdicts.claimed), )"): _POINTER_REREAD,
    ("orphans", "+return kept, history.Pointer(None)"): (
        "history.record then takes the pointer as absent: its create (If-None-Match) meets "
        "412 and it reads the pointer again, one try of MAX_SWAPS spent"
    ),
    ("orphans", 'kept = {k for entry in pointer.get("history", [])'): (
        "the history lists only committed runs' outputs (their metadata names the run), and "
        "dsjob deletes no manifest it committed, so the manifest check keeps them too: the "
        "history only saves that HEAD and GET"
    ),
    ("orphans", 'owner = info.metadata.get("run-id", "")'): (
        "an object without run-id metadata has no lease under any name no run uses: it is "
        "judged by age alone either way"
    ),
    ("orphans", "+item.last_modified > cutoff"): (
        "differs only for an object exactly ORPHAN_AGE old to the microsecond"
    ),
    ("orphans", "+self._now - written < timedelta"): (
        "differs only for a lease exactly its time plus slack old to the microsecond"
    ),
    ("orphans", "return True  # its run finished and deleted it"): _LEASE_GONE,
    ("orphans", "return True  # deleted since the read"): _LEASE_GONE,
    ("orphans", '+held.get("ttl_s", None) or 0'): "None or 0 is 0, as 0 or 0 is",
    ("orphans", '+held.get("ttl_s", ) or 0'): "None or 0 is 0, as 0 or 0 is",
    ("orphans", "held = {}"): "the next line turns anything that is not a dict into {}",
    ("orphans", 'return "same"'): _VERDICT,
    ("orphans", 'return "dead"'): _VERDICT,
    ("cli", "usage=exc.ctx.get_usage() if exc.ctx else"): (
        "click raises each usage error of dsjob's inside a command's context: ctx is never None"
    ),
    ("cli", "+standalone_mode=None"): "None and False are both 'not standalone' to click",
    ("cli", "except click.ClickException as exc:"): (
        "no dsjob command raises a ClickException that is not a UsageError (no click.File)"
    ),
    ("cli", "return _fail(DsjobError(exc.format_message()))"): (
        "no dsjob command raises a ClickException that is not a UsageError (no click.File)"
    ),
    ("cli", "return result if isinstance(result, int) else 0"): (
        "every command returns an int and click answers Exit with its int code: never a non-int"
    ),
    ("s3store", '+etag=head.get("ETag", None)'): (
        "every HeadObject answer carries an ETag (S3 API Reference, HeadObject; moto 5.2.5 too)"
    ),
    ("s3store", '+metadata=head.get("Metadata", None)'): (
        "botocore's HeadObject answer always has Metadata ({} when the object has none)"
    ),
    ("s3store", "create it, or set output-bucket to a bucket that exists"): (
        "rewords the missing-bucket error; its class (exit 2) and the bucket's name stay"
    ),
    ("s3store", "+time.sleep(_CONTENDED_BACKOFF_S * 3 ** (attempt - 1))"): (
        "timing only: the second wait is 0.6 s instead of 0.4 s; no caller sees the schedule, "
        "and the test bounds the waits from below (an upper bound that tight is flaky at load)"
    ),
    ("s3store", '+.get("Error", {}).get("Code", None))'): (
        "a ClientError always has an Error with a Code (botocore puts the HTTP status in it "
        "when there is no body); for other errors any default that is no S3 code acts alike"
    ),
    ("s3store", '+.get("Error", {}).get("Code", ))'): (
        "a ClientError always has an Error with a Code (botocore puts the HTTP status in it "
        "when there is no body); for other errors any default that is no S3 code acts alike"
    ),
    ("s3store", '+.get("Error", {}).get("Code", "XXXX"))'): (
        "a ClientError always has an Error with a Code (botocore puts the HTTP status in it "
        "when there is no body); for other errors any default that is no S3 code acts alike"
    ),
    ("s3store", '+.get("Error", None).get("Code", "")'): (
        "a ClientError always has an Error with a Code (botocore puts the HTTP status in it "
        "when there is no body); for other errors any default that is no S3 code acts alike"
    ),
    ("s3store", '+.get("Error", ).get("Code", "")'): (
        "a ClientError always has an Error with a Code (botocore puts the HTTP status in it "
        "when there is no body); for other errors any default that is no S3 code acts alike"
    ),
    ("s3store", "+self._bucket_seen = None"): (
        "None and False are both false for `if self._bucket_seen`, its only read"
    ),
    ("s3store", 'Body=b"",'): "a PutObject without a Body sends zero bytes: the same empty object",
    ("s3store", "digests of {path} use {digests.part_size}-byte parts"): (
        "a guard publish never trips (it digests with the store's part size); message only"
    ),
    ("s3store", "raise ValueError(msg)"): (
        "a guard publish never trips (it digests with the store's part size); message only"
    ),
    ("s3store", "+if attempt <= CONTENDED_TRIES:"): (
        "timing only: one more 0.8 s wait before the same TransientError"
    ),
    ("s3store", '"Quiet": True'): (
        "dsjob reads only the Errors of DeleteObjects' answer; Quiet only drops its Deleted list "
        "(S3 API Reference, DeleteObjects)"
    ),
    ("s3store", 'return Blob(data, answer.get("ETag", ""),'): (
        "every GetObject answer carries an ETag (S3 API Reference, GetObject; moto 5.2.5 too)"
    ),
    ("s3store", '+metadata=head.get("Metadata", )'): (
        "botocore's HeadObject answer always has Metadata ({} when the object has none)"
    ),
    ("s3store", '+etag=head.get("ETag", )'): (
        "every HeadObject answer carries an ETag (S3 API Reference, HeadObject; moto 5.2.5 too)"
    ),
    ("s3store", '+etag=head.get("ETag", "XXXX")'): (
        "every HeadObject answer carries an ETag (S3 API Reference, HeadObject; moto 5.2.5 too)"
    ),
    ("s3store", '+etag=head.get("ETag", "").strip(\'XX"XX\')'): (
        "an ETag is lower-case hex (and -N for a multipart one): there is no X to strip"
    ),
    ("s3store", '+ChecksumAlgorithm="crc32"'): (
        "botocore takes the algorithm name in any case (the when_required test passes with it)"
    ),
    ("multipart", 'thread_name_prefix="dsjob-part"'): "names the part threads (debugging only)",
    ("multipart", "+_, pending = wait(pending, timeout=0.2, )"): (
        "timing only: a failed part is seen at the next 0.2 s poll instead of at once"
    ),
    ("multipart", "+pool.shutdown(wait=None, cancel_futures=True)"): (
        "None and False are both 'do not wait' to ThreadPoolExecutor.shutdown"
    ),
}
# mutmut's exit code per mutant; None: never run (mutmut stopped early), never "killed".
_STATUS: dict[int | None, str] = {
    0: "survived",
    5: "no tests",
    33: "no tests",
    36: "timeout",
    24: "timeout",
    None: "not run",
}


def _run_mutmut(module: str, tests: list[str]) -> float:
    """Mutate one module with its tests; return the wall time in seconds."""
    shutil.rmtree(REPO / "mutants", ignore_errors=True)
    cfg = REPO / "setup.cfg"
    lines = [
        "[mutmut]",
        "source_paths = src",
        f"only_mutate = src/dsjob/{module}.py",
        "pytest_add_cli_args_test_selection =",
        *[f"    {t}" for t in tests],
        "pytest_add_cli_args =",
        "    -p",
        "    no:cacheprovider",
        "    -q",
        *[f"    {a}" for a in PYTEST_ARGS.get(module, [])],
        "also_copy =",
        "    examples",
        "    config",
        "",
    ]
    cfg.write_text("\n".join(lines))
    started = time.monotonic()
    children, env = os.cpu_count() or 1, dict(os.environ)
    servers: list[LocalServe] = []
    try:
        if module in SHARED_EMULATOR:
            # One emulator per worker, started once for the whole row: each test process
            # locks one that no other process holds (tests/support/emulator.py), since
            # every test resets the one it uses; one per mutant would cost seconds each.
            servers.extend(start_local_serve() for _ in range(children))
            env[SHARED_ENV] = ",".join(server.endpoint for server in servers)
        # mutmut gets a process group of its own, and everything it forks stays in it.
        # A worker that mutmut kills (its CPU or wall-time limit, Ctrl-C) skips pytest's
        # session teardown, so a `dsjob local serve` its session started outlives it
        # (a worker that finishes returns from pytest.main, and its teardown runs).
        # Ending the group once mutmut is done ends those too.
        mutmut = subprocess.Popen(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            process_group=0,
        )
        try:
            mutmut.wait()
        finally:
            _end_group(mutmut)
        if mutmut.returncode:  # e.g. the clean tests failed: no mutant was tried
            sys.exit(f"{module}: mutmut exited {mutmut.returncode}; its report is not written")
    finally:
        cfg.unlink()
        for server in servers:
            server.stop()
    # Kept (outside git) so the report can be rebuilt with --report-only.
    shutil.rmtree(KEEP / module, ignore_errors=True)
    KEEP.mkdir(parents=True, exist_ok=True)
    (REPO / "mutants").rename(KEEP / module)
    return time.monotonic() - started


def _end_group(leader: subprocess.Popen[bytes]) -> None:
    """SIGTERM every process left in `leader`'s process group, then SIGKILL what stays."""
    group = leader.pid  # process_group=0 made the leader's pid the group's id
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break  # the group is empty
        leader.poll()  # reap the leader (the rest were reparented, not ours to wait for)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
            leader.poll()
    leader.wait()


def _in_log_call(lines: list[str], index: int) -> bool:
    """True when line `index` belongs to a LOGGER.<level>(...) call."""
    for j in range(index, max(index - 8, -1), -1):
        if "LOGGER." in lines[j] or "SCRIPT_LOGGER." in lines[j]:
            return True
        if j < index and not lines[j].rstrip().endswith(("(", ",", "{", "[")):
            return False
    return False


_STRING = re.compile(r"(?:\b[rbfu]{1,2})?(?:\"[^\"]*\"|'[^']*')|\bNone\b")


def _wording_only(minus: list[str], plus: list[str]) -> bool:
    """True when the mutant only rewrites string literals (or turns one into None)."""
    if len(minus) != len(plus):
        return False
    pairs = zip(minus, plus, strict=True)
    return all(_STRING.sub("S", a[1:]) == _STRING.sub("S", b[1:]) for a, b in pairs)


def _in_raise(lines: list[str], index: int) -> bool:
    """True when line `index` belongs to a raise statement (an error's message)."""
    for j in range(index, max(index - 8, -1), -1):
        if lines[j].lstrip().startswith("raise "):
            return True
        if j < index and not lines[j].rstrip().endswith(("(", ",", "{", "[")):
            return False
    return False


def _survivors(module: str) -> tuple[int, list[dict[str, str]]]:
    from mutmut.mutation.diff_apply import get_diff_for_mutant  # noqa: PLC0415

    meta = REPO / "mutants" / "src" / "dsjob" / f"{module}.py.meta"
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    focus = FOCUS.get(module)
    found = []
    total = 0
    cwd = Path.cwd()
    os.chdir(REPO)
    try:
        for name, code in sorted(codes.items()):
            function = name.rsplit(".", 1)[-1]
            if focus and not function.startswith(focus):
                continue
            total += 1
            if code not in _STATUS:
                continue
            diff = get_diff_for_mutant(name, path=f"src/dsjob/{module}.py").splitlines()[2:]
            before = [ln[1:] for ln in diff if not ln.startswith("+")]
            changed = [i for i, ln in enumerate(diff) if ln.startswith("-")]
            minus = [ln for ln in diff if ln.startswith("-")]
            plus = [ln for ln in diff if ln.startswith("+")]
            orig_index = [sum(1 for d in diff[:i] if not d.startswith("+")) for i in changed]
            if orig_index and all(_in_log_call(before, i) for i in orig_index):
                kind, reason = "log only", "changes a log line only; logs are not the contract"
            elif _wording_only(minus, plus) and all(_in_raise(before, i) for i in orig_index):
                kind, reason = "message wording", "rewords an error; its class and names stay"
            else:
                kind, reason = _STATUS[code], ""
                for (mod, needle), why in EQUIVALENT.items():
                    # A needle starting with "+" names the mutated line, else the original.
                    lines = plus if needle.startswith("+") else minus
                    if mod == module and any(needle.removeprefix("+") in ln for ln in lines):
                        kind, reason = "equivalent", why
            found.append(
                {"name": name, "kind": kind, "reason": reason, "diff": "\n".join(minus + plus)}
            )
    finally:
        os.chdir(cwd)
    return total, found


def _section(module: str, total: int, found: list[dict[str, str]], seconds: float) -> str:
    kept_tests = KEEP / module / "tests.txt"
    tests = kept_tests.read_text() if kept_tests.exists() else ", ".join(MODULES[module])
    kinds: dict[str, int] = {}
    for item in found:
        kinds[item["kind"]] = kinds.get(item["kind"], 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) or "none"
    out = [
        f"<!-- module:{module} -->",
        f"## {module}",
        "",
        (
            f"{total} mutants, tests {tests}; not killed: {summary}; "
            f"{seconds:.0f} s on {os.cpu_count()} CPUs ({time.strftime('%Y-%m-%d')})."
        ),
        "",
    ]
    for item in found:
        if item["kind"] in ("log only", "message wording"):
            continue
        reason = f" — {item['reason']}" if item["reason"] else ""
        change = " → ".join(f"`{ln.strip()}`" for ln in item["diff"].splitlines()[:4])
        out.append(f"- `{item['name'].rsplit('.', 1)[-1]}` ({item['kind']}){reason}: {change}")
    out.append(f"<!-- /module:{module} -->")
    return "\n".join(out)


def _write(sections: dict[str, str]) -> None:
    text = REPORT.read_text() if REPORT.exists() else ""
    head = (
        "# Mutation testing (`make mutation`)\n\n"
        "Survivors of mutmut over the contract modules, each module against its own\n"
        "fast tests. Survivors that only change a log line (log only) or only reword an\n"
        "error message while its class, exit code and the names in it stay (message\n"
        "wording) are counted, not listed: the contract is the exit code, the outputs\n"
        "and the names a message carries. Regenerate with\n"
        "`make mutation` (or `make mutation MODULES=archive`).\n"
    )
    kept = {
        m.group(1): m.group(0)
        for m in re.finditer(r"<!-- module:(\w+) -->.*?<!-- /module:\1 -->", text, re.DOTALL)
    }
    kept.update(sections)
    body = "\n\n".join(kept[m] for m in MODULES if m in kept)
    REPORT.write_text(f"{head}\n{body}\n")


def main() -> int:
    """Run the selected modules and rewrite their sections of the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=", ".join(MODULES))
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild the report from the last run"
    )
    args = parser.parse_args()
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s): {', '.join(unknown)}")
    sections = {}
    for module in args.modules or list(MODULES):
        if args.report_only:
            seconds = float((KEEP / module / "seconds").read_text())
        else:
            seconds = _run_mutmut(module, MODULES[module])
            (KEEP / module / "seconds").write_text(f"{seconds:.0f}")
            (KEEP / module / "tests.txt").write_text(", ".join(MODULES[module]))
        # mutmut reads ./mutants: lend it the kept copy while the diffs are read.
        shutil.rmtree(REPO / "mutants", ignore_errors=True)
        (KEEP / module).rename(REPO / "mutants")
        try:
            total, found = _survivors(module)
        finally:
            (REPO / "mutants").rename(KEEP / module)
        sections[module] = _section(module, total, found, seconds)
        print(f"{module}: {total} mutants, {len(found)} not killed ({seconds:.0f} s)")
    _write(sections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
