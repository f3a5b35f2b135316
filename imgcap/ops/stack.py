"""Find a deployed stack's bucket and queues by the stack's name.

Two sources, both written by the stack (and by the local runtime's provisioning):
- SSM parameters ``/<stack>/s3-bucket``, ``/<stack>/queue-url``, ``/<stack>/dlq-url``;
- CloudFormation outputs ``BucketName``, ``QueueUrl``, ``DeadLetterQueueUrl``, ``DashboardName``.
Either one is enough. When both answer and disagree (someone edited a parameter by hand), the
stack output wins, because that is what the functions were deployed with, and a warning says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from imgcap.ops.aws import EXIT_AWS, AwsClients, OpsError, error_code, is_access_denied
from lambdas.shared.contract import (
    OUTPUT_BUCKET,
    OUTPUT_CAPTION_FUNCTION,
    OUTPUT_DASHBOARD,
    OUTPUT_DLQ_URL,
    OUTPUT_QUEUE_URL,
    OUTPUT_RESIZE_FAILURE_QUEUE,
    OUTPUT_RESIZE_FUNCTION,
    SSM_BUCKET_PARAM,
    SSM_DLQ_URL_PARAM,
    SSM_QUEUE_URL_PARAM,
)

# CloudFormation's own rule for stack names; SSM parameter paths accept the same characters.
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")

# field -> (SSM parameter below /<stack>/, CloudFormation output key)
_SOURCES: Mapping[str, tuple[str | None, str]] = {
    "bucket": (SSM_BUCKET_PARAM, OUTPUT_BUCKET),
    "queue_url": (SSM_QUEUE_URL_PARAM, OUTPUT_QUEUE_URL),
    "dlq_url": (SSM_DLQ_URL_PARAM, OUTPUT_DLQ_URL),
    "dashboard_name": (None, OUTPUT_DASHBOARD),
    "resize_failure_queue_url": (None, OUTPUT_RESIZE_FAILURE_QUEUE),
    "resize_function": (None, OUTPUT_RESIZE_FUNCTION),
    "caption_function": (None, OUTPUT_CAPTION_FUNCTION),
}


@dataclass(frozen=True, slots=True)
class StackRef:
    name: str
    region: str | None
    bucket: str
    queue_url: str | None
    dlq_url: str | None
    dashboard_name: str | None = None
    resize_failure_queue_url: str | None = None  # the resize function's async on-failure destination
    sources: tuple[str, ...] = ()  # "ssm" and/or "cloudformation"
    stack_status: str | None = None
    warnings: tuple[str, ...] = field(default=())
    function_names: tuple[str, ...] = ()  # resize and caption (stack outputs), for the Lambda cost

    @property
    def ssm_prefix(self) -> str:
        return f"/{self.name}"

    def require_queue(self) -> str:
        if not self.queue_url:
            raise OpsError(
                f"stack '{self.name}' has no caption queue URL: neither "
                f"{self.ssm_prefix}/{SSM_QUEUE_URL_PARAM} nor the {OUTPUT_QUEUE_URL} output exists",
                exit_code=EXIT_AWS,
            )
        return self.queue_url

    def require_dlq(self) -> str:
        if not self.dlq_url:
            raise OpsError(
                f"stack '{self.name}' has no dead-letter queue URL: neither "
                f"{self.ssm_prefix}/{SSM_DLQ_URL_PARAM} nor the {OUTPUT_DLQ_URL} output exists",
                exit_code=EXIT_AWS,
            )
        return self.dlq_url


def not_found_message(stack_name: str) -> str:
    return (
        f"stack '{stack_name}' not found: no SSM parameters under /{stack_name} and no CloudFormation "
        f"stack named {stack_name} (check --stack-name / AWS_REGION)"
    )


def validate_stack_name(stack_name: str) -> str:
    if not _STACK_NAME.match(stack_name):
        raise OpsError(
            f"'{stack_name}' is not a valid stack name (letters, digits and hyphens, starting with a letter)"
        )
    return stack_name


def read_ssm(ssm: Any, stack_name: str) -> dict[str, str]:
    """The provisioned facts under /<stack>/ that exist (missing ones are simply absent)."""
    names = {f"/{stack_name}/{p}": p for p in (SSM_BUCKET_PARAM, SSM_QUEUE_URL_PARAM, SSM_DLQ_URL_PARAM)}
    response = ssm.get_parameters(Names=list(names))
    return {names[p["Name"]]: str(p["Value"]) for p in response.get("Parameters", []) if p["Name"] in names}


def read_outputs(cloudformation: Any, stack_name: str) -> tuple[dict[str, str], str] | None:
    """(outputs by key, stack status), or None when no stack has that name."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name).get("Stacks", [])
    except ClientError as exc:
        message = str(exc.response.get("Error", {}).get("Message", ""))
        if error_code(exc) == "ValidationError" and "does not exist" in message:
            return None
        raise
    if not stacks:
        return None
    stack = stacks[0]
    outputs = {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in stack.get("Outputs", [])}
    return outputs, str(stack.get("StackStatus", ""))


def local_resize_failure_queue(clients: AwsClients, stack_name: str) -> str | None:
    """The local runtime's resize failure queue (it has no CloudFormation outputs), found by its name.

    Asked only when the stack has no ``ResizeFailureQueueUrl`` output; None when there is no such
    queue or it cannot be read (a deployed stack always has the output).
    """
    from imgcap.local.provision import stack_names

    try:
        return str(
            clients.sqs.get_queue_url(QueueName=stack_names(stack_name)["resize_failures"])["QueueUrl"]
        )
    except ClientError:
        return None


def resolve_stack(
    clients: AwsClients,
    stack_name: str,
    warn: Callable[[str], None] | None = None,
) -> StackRef:
    """Look the stack up in SSM and CloudFormation; raise ``OpsError`` when neither knows it."""
    validate_stack_name(stack_name)
    notes: list[str] = []

    try:
        from_ssm = read_ssm(clients.ssm, stack_name)
    except ClientError as exc:
        if not is_access_denied(exc):
            raise
        from_ssm = {}
        notes.append(f"cannot read SSM parameters under /{stack_name} (access denied); using stack outputs")

    try:
        cfn = read_outputs(clients.cloudformation, stack_name)
    except ClientError as exc:
        if not is_access_denied(exc) or not from_ssm:
            raise
        cfn = None  # SSM alone is enough; CloudFormation is only the cross-check

    if not from_ssm and cfn is None:
        raise OpsError(not_found_message(stack_name), exit_code=EXIT_AWS)

    outputs, status = cfn if cfn is not None else ({}, None)
    values: dict[str, str | None] = {}
    for name, (param, output) in _SOURCES.items():
        ssm_value = from_ssm.get(param) if param else None
        out_value = outputs.get(output) or None
        if ssm_value and out_value and ssm_value != out_value:
            notes.append(
                f"/{stack_name}/{param} is {ssm_value!r} but the stack output {output} is {out_value!r}; "
                "using the stack output"
            )
        values[name] = out_value or ssm_value

    if status and (status.endswith("_FAILED") or status.startswith("ROLLBACK") or "DELETE" in status):
        notes.append(f"stack {stack_name} is in state {status}")

    bucket = values["bucket"]
    if not bucket:
        raise OpsError(
            f"stack '{stack_name}' has no bucket: neither /{stack_name}/{SSM_BUCKET_PARAM} "
            f"nor the {OUTPUT_BUCKET} output exists",
            exit_code=EXIT_AWS,
        )
    if warn is not None:
        for note in notes:
            warn(note)
    sources = tuple(s for s, ok in (("ssm", bool(from_ssm)), ("cloudformation", cfn is not None)) if ok)
    return StackRef(
        name=stack_name,
        region=clients.region,
        bucket=bucket,
        queue_url=values["queue_url"],
        dlq_url=values["dlq_url"],
        dashboard_name=values["dashboard_name"],
        resize_failure_queue_url=values["resize_failure_queue_url"]
        or local_resize_failure_queue(clients, stack_name),
        sources=sources,
        stack_status=status,
        warnings=tuple(notes),
        function_names=tuple(n for n in (values["resize_function"], values["caption_function"]) if n),
    )
