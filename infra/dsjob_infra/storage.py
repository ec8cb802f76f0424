"""The job's buckets: input, output, artifacts, and the access-log bucket they report to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from dsjob_infra.nag import acknowledge, skip_checkov

if TYPE_CHECKING:
    from collections.abc import Callable

ABORT_UPLOADS_DAYS = 7
# Where the fan-out's distributed map writes its results in the output bucket.
MAP_RESULTS_PREFIX = "_map-results"


class JobBuckets(Construct):
    """Three encrypted, private, TLS-only buckets, each logging access to a fourth."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: Callable[[str], str],
        noncurrent_days: int,
    ) -> None:
        """Args: name: purpose -> ds-<purpose>-<env>-...; noncurrent_days: old versions kept."""
        super().__init__(scope, construct_id)
        self._noncurrent_days = noncurrent_days
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            bucket_name=name("access-logs"),
            # Server access logs can only be delivered to SSE-S3 buckets.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(365)),
                _abort_uploads(),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            "This is the access-log sink; logging it into itself would loop.",
        )
        skip_checkov(
            self.access_logs,
            "CKV_AWS_18",
            "This is the access-log sink; logging it into itself would loop.",
        )
        skip_checkov(
            self.access_logs,
            "CKV_AWS_21",
            "S3 writes each access-log record once under a new key; versions would hold "
            "no history, only cost. Records expire after 365 days.",
        )
        self.input = self._bucket("Input", name("input"), versioned=False)
        skip_checkov(
            self.input,
            "CKV_AWS_21",
            "Inputs are uploaded under a new key per month and only read by the job; "
            "outputs and artifacts, which do change under a key, are versioned.",
        )
        self.output = self._bucket("Output", name("output"), versioned=True)
        # The fan-out's per-item results (the distributed map's ResultWriter) are for
        # inspecting a run, not data: they expire.
        self.output.add_lifecycle_rule(
            id="expire-map-results",
            prefix=f"{MAP_RESULTS_PREFIX}/",
            expiration=Duration.days(self._noncurrent_days),
        )
        # Models and scripts change under the same key; versions let a run be reproduced.
        self.artifacts = self._bucket("Artifacts", name("artifacts"), versioned=True)

    def _bucket(self, construct_id: str, bucket_name: str, *, versioned: bool) -> s3.Bucket:
        rules = [_abort_uploads()]
        if versioned:
            # Output keys are unique per run, so a pruned output is a delete marker over
            # one noncurrent version: "keep N newer versions" would never expire it. S3 User
            # Guide, "Lifecycle configuration elements": NoncurrentVersionExpiration after
            # N days removes the version; ExpiredObjectDeleteMarker then removes the marker.
            rules.append(
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(self._noncurrent_days),
                    expired_object_delete_marker=True,
                )
            )
        return s3.Bucket(
            self,
            construct_id,
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=versioned,
            lifecycle_rules=rules,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"{bucket_name}/",
            # Data outlives the stack: deleting the stack must not delete the data.
            removal_policy=RemovalPolicy.RETAIN,
        )


def _abort_uploads() -> s3.LifecycleRule:
    return s3.LifecycleRule(
        id="abort-incomplete-multipart-uploads",
        abort_incomplete_multipart_upload_after=Duration.days(ABORT_UPLOADS_DAYS),
    )
