"""Creates the template's tables and queues in the local emulators.

One source of truth: every AWS::DynamoDB::Table and AWS::SQS::Queue of
infra/template.yaml is created from its own Properties (keys, indexes, TTL,
streams, FIFO, visibility timeout, redrive policy), named after its logical id. Prints
the resulting settings as KEY=VALUE lines for the functions' environment.
The secrets the template expects to exist before a deploy (the webhook
signing secrets, parameters of the template) are created from the
NAME=VALUE arguments. The emulator enforces no IAM: a table's resource
policy (the audit table's) is not applied locally.

The tables go to DynamoDB Local, everything else to moto.

usage: resources.py TEMPLATE MOTO_ENDPOINT DYNAMODB_ENDPOINT [SECRET_NAME=VALUE ...]
"""

import sys

import boto3
import yaml


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !GetAtt, ...) as data."""


def _tag(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {tag_suffix: value}


CfnLoader.add_multi_constructor("!", _tag)

# Settings the functions read, by the logical id that provides them.
ENV_OF = {
    "StateTable": "STATE_TABLE",
    "AuditTable": "AUDIT_TABLE",
    "ReconcileQueue": "RECONCILE_QUEUE_URL",
    "ReconcileDeadLetterQueue": "DEAD_LETTER_QUEUE_URL",
    "BillingQueue": "BILLING_QUEUE_URL",
    "BillingDeadLetterQueue": "BILLING_DEAD_LETTER_QUEUE_URL",
    "ModelWorkQueue": "MODEL_WORK_QUEUE_URL",
    "ModelWorkDeadLetterQueue": "MODEL_WORK_DEAD_LETTER_QUEUE_URL",
    "AccessEventsBus": "EVENT_BUS_NAME",
    "AuditSigningKey": "AUDIT_SIGNING_KEY_ID",
    "TokenSigningKey": "TOKEN_SIGNING_KEY_ID",
}

TABLE_KEYS = ("AttributeDefinitions", "KeySchema", "BillingMode", "GlobalSecondaryIndexes", "LocalSecondaryIndexes")
QUEUE_ATTRS = ("FifoQueue", "ContentBasedDeduplication", "VisibilityTimeout", "MessageRetentionPeriod",
               "DelaySeconds", "ReceiveMessageWaitTimeSeconds", "DeduplicationScope", "FifoThroughputLimit")


def main(template_path, endpoint, ddb_endpoint, secrets):
    with open(template_path) as f:
        template = yaml.load(f, Loader=CfnLoader)
    resources = template["Resources"]
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
    ddb = session.client("dynamodb", endpoint_url=ddb_endpoint)
    sqs = session.client("sqs", endpoint_url=endpoint)
    env = {}

    manager = session.client("secretsmanager", endpoint_url=endpoint)
    for pair in secrets:
        name, value = pair.split("=", 1)
        manager.create_secret(Name=name, SecretString=value)

    for name, res in resources.items():
        if res["Type"] != "AWS::DynamoDB::Table":
            continue
        props = res.get("Properties", {})
        args = {k: props[k] for k in TABLE_KEYS if k in props}
        stream = props.get("StreamSpecification")
        if stream:
            args["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
        ddb.create_table(TableName=name, **args)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True})
        env[name] = name

    # Signing keys (moto's KMS signs with the key spec the template names);
    # the tables and queues are not encrypted locally, so the data key is not made.
    kms = session.client("kms", endpoint_url=endpoint)
    for name, res in resources.items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::KMS::Key" and props.get("KeyUsage") == "SIGN_VERIFY":
            key = kms.create_key(KeySpec=props["KeySpec"], KeyUsage="SIGN_VERIFY", Description=props.get("Description", name))
            env[name] = key["KeyMetadata"]["Arn"]

    events = session.client("events", endpoint_url=endpoint)
    for name, res in resources.items():
        if res["Type"] == "AWS::Events::EventBus":
            events.create_event_bus(Name=name)
            env[name] = name

    queues = {name: res for name, res in resources.items() if res["Type"] == "AWS::SQS::Queue"}
    arns = {}
    # Dead-letter targets first: a redrive policy names its target's ARN.
    for name in sorted(queues, key=lambda n: "RedrivePolicy" in queues[n].get("Properties", {})):
        props = queues[name].get("Properties", {})
        attrs = {k: str(props[k]).lower() if isinstance(props[k], bool) else str(props[k]) for k in QUEUE_ATTRS if k in props}
        redrive = props.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["GetAtt"].split(".")[0]
            attrs["RedrivePolicy"] = '{"deadLetterTargetArn":"%s","maxReceiveCount":"%s"}' % (arns[target], redrive["maxReceiveCount"])
        queue_name = name + (".fifo" if props.get("FifoQueue") else "")
        url = sqs.create_queue(QueueName=queue_name, Attributes=attrs)["QueueUrl"]
        arns[name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        env[name] = url

    max_receives = template.get("Parameters", {}).get("MaxReceives", {}).get("Default", 5)
    for logical, var in ENV_OF.items():
        if logical not in env:
            sys.exit(f"template has no resource {logical} (needed for {var})")
        print(f"{var}={env[logical]}")
    print(f"MAX_RECEIVES={max_receives}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
