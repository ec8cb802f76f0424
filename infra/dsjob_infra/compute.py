"""Where the job runs: the image repository, a small VPC, the ECS cluster and the Fargate task."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from dsjob_infra.grants import grant_job
from dsjob_infra.nag import acknowledge, skip_checkov

if TYPE_CHECKING:
    from dsjob_infra.settings import PipelineSettings

CONTAINER_NAME = "job"
LOG_STREAM_PREFIX = "job"
# Fargate's ceiling; the job needs it to finish publishing or abort cleanly after SIGTERM.
STOP_TIMEOUT_SECONDS = 120
HTTPS = 443
GUARDDUTY_AGENT_REPOSITORY = "aws-guardduty-agent-fargate"


class JobCompute(Construct):
    """The repository reference, network, cluster, task definition and the two task roles."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: PipelineSettings,
        input_bucket: s3.IBucket,
        output_bucket: s3.IBucket,
        artifact_bucket: s3.IBucket,
    ) -> None:
        """Args: the three buckets the task role is scoped to."""
        super().__init__(scope, construct_id)
        env = settings.environment
        # The repository lives in its own stack (repository.py); referenced by name, not by a
        # cross-stack export, so either stack can be updated alone.
        self.repository = ecr.Repository.from_repository_name(
            self, "Repository", settings.repository_name
        )
        self.vpc = self._network(settings, [input_bucket, output_bucket, artifact_bucket])
        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=self.vpc,
            description=f"ds-preprocessing-{env} task: no inbound, outbound HTTPS to AWS APIs",
            allow_all_outbound=False,
        )
        # Every AWS API (S3 through the gateway endpoint, ECR, SSM, Logs) is HTTPS. DNS to
        # the VPC resolver is not subject to security groups (VPC User Guide, "Amazon DNS
        # server"), so TCP 443 is all the task needs.
        self.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS), "HTTPS to AWS service endpoints"
        )
        # A fixed name: IAM statements name the cluster's tasks (task/<cluster>/*) without a Ref.
        self.cluster_name = f"ds-preprocessing-{env}"
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            cluster_name=self.cluster_name,
            vpc=self.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.log_group = logs.LogGroup(
            self,
            "JobLogs",
            log_group_name=f"/ecs/ds-preprocessing-{env}",
            retention=retention(settings.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN if env == "prod" else RemovalPolicy.DESTROY,
        )
        skip_checkov(self.log_group, "CKV_AWS_158", LOGS_KMS_REASON)
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="Pulls the ds-preprocessing image and writes its logs",
        )
        self.task_role = iam.Role(
            self,
            "TaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="The job: reads its parameters, input and artifacts; writes outputs",
        )
        grant_job(self.task_role, settings, input_bucket, output_bucket, artifact_bucket)
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            family=f"ds-preprocessing-{env}",
            cpu=settings.cpu,
            memory_limit_mib=settings.memory_mib,
            ephemeral_storage_gib=settings.ephemeral_storage_gib,
            execution_role=self.execution_role,
            task_role=self.task_role,
            runtime_platform=ecs.RuntimePlatform(
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
                cpu_architecture=getattr(ecs.CpuArchitecture, settings.cpu_architecture),
            ),
        )
        self.container = self.task_definition.add_container(
            "Job",
            container_name=CONTAINER_NAME,
            # A digest (sha256:...) is written as repo@digest: the exact image ml-push pushed.
            image=ecs.ContainerImage.from_ecr_repository(
                self.repository, settings.image_digest or settings.image_tag
            ),
            essential=True,
            stop_timeout=Duration.seconds(STOP_TIMEOUT_SECONDS),
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix=LOG_STREAM_PREFIX, log_group=self.log_group
            ),
            environment={"DSJOB_PARAM_PREFIX": settings.param_prefix},
        )
        self._grant_guardduty_agent_pull()
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The only variable is the SSM parameter prefix, which is not a secret.",
        )

    def _grant_guardduty_agent_pull(self) -> None:
        """Let ECS pull the GuardDuty runtime agent that it adds as a sidecar to each task.

        GuardDuty User Guide, "Prerequisites for AWS Fargate (Amazon ECS only) support":
        with Runtime Monitoring on, the task execution role must be able to pull the agent
        image from GuardDuty's repository, which lives in an AWS-owned account per region.
        """
        stack = Stack.of(self)
        self.execution_role.add_to_policy(
            iam.PolicyStatement(
                sid="PullGuardDutyAgent",
                actions=[
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                ],
                resources=[
                    f"arn:{stack.partition}:ecr:{stack.region}:*:repository/{GUARDDUTY_AGENT_REPOSITORY}"
                ],
            )
        )
        acknowledge(
            self.execution_role,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecr:{stack.region}:*:"
            f"repository/{GUARDDUTY_AGENT_REPOSITORY}]",
            "GuardDuty's agent repository is in an AWS-owned account that differs per region; "
            "the grant names that one repository.",
        )

    def _network(self, settings: PipelineSettings, buckets: list[s3.IBucket]) -> ec2.Vpc:
        # Public subnets and no NAT gateway: the task only talks to AWS APIs, a NAT
        # would cost more per month than the monthly job; no inbound rule exists.
        vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                )
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
            restrict_default_security_group=False,
        )
        endpoint = vpc.node.find_child("S3")
        assert isinstance(endpoint, ec2.GatewayVpcEndpoint)  # noqa: S101 - CDK's own child
        self._limit_endpoint(endpoint, buckets)
        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            retention=retention(settings.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        skip_checkov(flow_logs, "CKV_AWS_158", LOGS_KMS_REASON)
        vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        return vpc

    @staticmethod
    def _limit_endpoint(endpoint: ec2.GatewayVpcEndpoint, buckets: list[s3.IBucket]) -> None:
        """Through the S3 endpoint: this stack's buckets and ECR's image layer bucket only.

        ECR User Guide, "Amazon ECR interface VPC endpoints", "Minimum Amazon S3 bucket
        permissions": image layers are read from prod-<region>-starport-layer-bucket.
        """
        stack = Stack.of(endpoint)
        endpoint.add_to_policy(
            iam.PolicyStatement(
                sid="StackBuckets",
                principals=[iam.AnyPrincipal()],
                actions=[
                    "s3:ListBucket",
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                resources=[arn for b in buckets for arn in (b.bucket_arn, b.arn_for_objects("*"))],
            )
        )
        endpoint.add_to_policy(
            iam.PolicyStatement(
                sid="EcrImageLayers",
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject"],
                resources=[
                    f"arn:{stack.partition}:s3:::prod-{stack.region}-starport-layer-bucket/*"
                ],
            )
        )


LOGS_KMS_REASON = (
    "CloudWatch Logs encrypts every log group at rest with AWS-owned keys; the job logs "
    "no secrets, and a customer key would add a key policy to keep in step for no gain."
)


def retention(days: int) -> logs.RetentionDays:
    """The RetentionDays member for a number of days (jsii enums carry names, not numbers)."""
    if days not in RETENTION:
        raise ValueError(f"logRetentionDays must be one of {sorted(RETENTION)}, got {days}")
    return RETENTION[days]


RETENTION = {
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}
