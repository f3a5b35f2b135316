"""Operator commands against a deployed stack (or the local runtime's loopback servers).

The stack is found by name (``--stack-name``): SSM parameters under ``/<stack-name>/`` and the
CloudFormation stack outputs. Clients are plain boto3 clients, so ``AWS_PROFILE``, ``AWS_REGION``
and ``AWS_ENDPOINT_URL*`` work like in any other boto3 program.
"""
