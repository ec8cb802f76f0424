"""Failures reach people: an SNS topic fed by an EventBridge rule and a dead-letter alarm."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from dsjob_infra.nag import acknowledge, skip_checkov

if TYPE_CHECKING:
    from aws_cdk import aws_stepfunctions as sfn

    from dsjob_infra.settings import PipelineSettings

# Step Functions Developer Guide, "Automating Step Functions event delivery with
# EventBridge": the detail-type and the statuses of an execution that ended badly.
FAILED_STATUSES = ["FAILED", "TIMED_OUT"]
DLQ_RETENTION = Duration.days(14)


class FailureAlarms(Construct):
    """An encrypted topic (email per environment), the failed-execution rule, DLQ alarms."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: PipelineSettings,
        state_machine: sfn.StateMachine,
    ) -> None:
        """Args: settings (alarmEmail subscribes); the state machine whose failures alarm."""
        super().__init__(scope, construct_id)
        env = settings.environment
        # SNS Developer Guide, "Enabling compatibility between event sources ... and
        # encrypted topics": EventBridge and CloudWatch need the key, so it is our own.
        self.key = kms.Key(
            self,
            "TopicKey",
            description=f"ds-preprocessing-{env}: encrypts the failure topic",
            enable_key_rotation=True,
        )
        for service in ("events.amazonaws.com", "cloudwatch.amazonaws.com"):
            self.key.grant(iam.ServicePrincipal(service), "kms:Decrypt", "kms:GenerateDataKey*")
        self.topic = sns.Topic(
            self,
            "FailureTopic",
            display_name=f"ds-preprocessing-{env} failures",
            master_key=self.key,
            enforce_ssl=True,
        )
        if settings.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))
        detail = events.EventField.from_path
        self.rule = events.Rule(
            self,
            "ExecutionFailed",
            description=f"ds-preprocessing-{env}: an execution failed or timed out",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={
                    "status": FAILED_STATUSES,
                    "stateMachineArn": [state_machine.state_machine_arn],
                },
            ),
            targets=[
                events_targets.SnsTopic(
                    self.topic,
                    message=events.RuleTargetInput.from_text(
                        f"ds-preprocessing-{env}: execution {detail('$.detail.name')} "
                        f"ended {detail('$.detail.status')}. Error: {detail('$.detail.error')}. "
                        f"Cause: {detail('$.detail.cause')}. "
                        f"Execution: {detail('$.detail.executionArn')}"
                    ),
                )
            ],
        )

    def dead_letter_queue(self, construct_id: str) -> sqs.Queue:
        """An encrypted queue whose first message alarms the topic."""
        queue = sqs.Queue(
            self,
            construct_id,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
        )
        acknowledge(
            queue,
            "AwsSolutions-SQS3",
            "This queue is itself the schedule's dead-letter queue; its depth raises an alarm.",
        )
        skip_checkov(
            queue,
            "CKV_AWS_27",
            "The queue is encrypted with SQS-managed keys (SqsManagedSseEnabled); the check "
            "recognises only a KMS key, which EventBridge Scheduler would also need access to.",
        )
        alarm = cloudwatch.Alarm(
            self,
            f"{construct_id}Alarm",
            alarm_description="A scheduled start of the workflow could not be delivered",
            metric=queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        return queue
