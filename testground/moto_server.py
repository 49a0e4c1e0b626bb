"""moto's server, with an EC2 resource's tags looked up by its ID.

moto 5.2.5 finds one resource's tags by scanning every tag in the account
(`TaggedEC2Resource.get_tags` asks `describe_tags` with a resource-id
filter, which matches a pattern against each tag's resource ID). A
tag-filtered describe then costs its resources times the account's tags:
with a few hundred clusters in one account, moto, not the operator or
AWS's limits, set the pace of the benchmark (profiled: nine tenths of
moto's request time in that scan). AWS indexes its tags.

The answer is the same: the resource-id filter is an anchored pattern of
the ID (`fnmatch.translate`), so it matches that ID's tags alone, in their
order.

And moto lists its package directory (a stat per service) on every request
to route it, holding the dispatcher's lock: the list is read once here, as
the directory does not change while moto runs (a tenth of moto's request
time with 500 clusters).

And moto judges an IAM call on an instance profile, or on a role that does
not exist yet (CreateRole), as a call on the resource `*`: a policy that
allows it only on some ARNs (`role/byoc-*`) is refused where AWS allows
it. AWS judges the ARN the call names; so does `_determine_resource`
here, so that the operator's generated policies are judged by their
resources as AWS judges them.

And moto keeps the inline policies of a role made by CloudFormation as the
template's mapping, answering GetRolePolicy with Python's rendering of
it; AWS answers the JSON document.

And moto judges an EC2 call as one call on the resource `*`, which a
statement naming resource types (`arn:aws:ec2:*:*:vpc/*`, as AWS's
examples and the generated policy do) never matches, while AWS judges each
resource the call touches. Here a call on `*` matches any statement's
resources: moto judges the action, the proxy's evaluator judges the
resources as AWS does.

And moto judges a role's trust policy knowing only the request's
`sts:ExternalId`: a condition on any other key fails. A trust policy that
requires a session tag (`aws:RequestTag/...`) is therefore refused where
AWS allows it; here the request's session tags are known too (the proxy's
evaluator judges the rest of the trust, `sts:TagSession` included).

And moto answers GetAccountAuthorizationDetails with views of its role,
user, group and profile dictionaries, serialized after its backend has
let go of them: a role or profile made meanwhile by another request fails
the answer with a 500 ("dictionary changed size during iteration"), which
AWS never does (seen with 500 clusters converging in one account). The
answer here is a copy taken at once.

And the proxy's IAM evaluator needs what AWS knows of a resource when it
authorizes a request on it: its tags (`aws:ResourceTag`), its VPC
(`ec2:Vpc`), an image's owner (`ec2:Owner`), a role's boundary; to
judge a role by its own policies, their documents; to judge an
AssumeRole as AWS does, the role's trust policy and the caller (the IAM
user an access key belongs to, with its policies). It asks
`/moto-api/byoc/facts` (added here) for them, in any account and region,
past moto's own IAM enforcement: an SQS queue's and an EventBridge rule's
tags among them.

And moto puts an event into any SQS queue a matching rule targets. AWS
puts it only into a queue whose policy lets EventBridge send for that
rule, and never into one encrypted with a KMS key EventBridge may not use
(`_delivers`). The ground also emits events as AWS's services do
(`/moto-api/byoc/event`) and takes a spot instance back
(`/moto-api/byoc/reclaim`). Run with moto's own arguments.
"""

import fnmatch
import functools
import json
import sys

from moto import backends
from moto.ec2.models import ec2_backends
from moto.events.models import Rule as EventsRule, events_backends
from moto.logs.models import logs_backends
from moto.kms.models import kms_backends
from moto.sqs.models import sqs_backends
from moto.iam.models import iam_backends
from moto.moto_api._internal import urls as moto_api_urls
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.models.amis import Ami
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix, random_ami_id
from moto.iam import access_control
from moto.iam.access_control import IAMPolicyStatement
from moto.iam.models import IAMBackend, Role
from moto.iam.responses import IamResponse
from moto.server import main


def get_tags(self):
    resource_id = getattr(self, "id", None)
    if not resource_id:
        return []
    resource_type = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
    return [
        {
            "resource_id": resource_id,
            "key": key,
            "value": value,
            "resource_type": resource_type,
        }
        for key, value in self.ec2_backend.tags.get(resource_id, {}).items()
    ]


TaggedEC2Resource.get_tags = get_tags


def _iam_arn(self, kind, name, find):
    try:
        return find(name).arn
    except Exception:
        path = (self.data.get("Path") or ["/"])[0]
        return f"arn:{self.partition}:iam::{self.current_account}:{kind}{path}{name}"


def _determine_resource(self):
    """The ARN an IAM call names: its instance profile, else its role."""
    profile = (self.data.get("InstanceProfileName") or [None])[0]
    if profile:
        return _iam_arn(self, "instance-profile", profile, self.backend.get_instance_profile)
    role = (self.data.get("RoleName") or [None])[0]
    if role:
        return _iam_arn(self, "role", role, self.backend.get_role)
    return "*"


IamResponse._determine_resource = _determine_resource

_element_matches = IAMPolicyStatement._check_element_matches


def _check_element_matches(self, statement_element, value):
    if statement_element == "Resource" and value == "*":
        return True
    return _element_matches(self, statement_element, value)


IAMPolicyStatement._check_element_matches = _check_element_matches

_authorization_details = IAMBackend.get_account_authorization_details


def get_account_authorization_details(self, policy_filter):
    details = _authorization_details(self, policy_filter)
    return {kind: list(items) for kind, items in details.items()}


IAMBackend.get_account_authorization_details = get_account_authorization_details

_incoming = access_control.format_incoming_conditional_values


def format_incoming_conditional_values(data):
    values = _incoming(data)
    n = 1
    while f"Tags.member.{n}.Key" in data:
        key = data[f"Tags.member.{n}.Key"][0]
        values[f"aws:RequestTag/{key}"] = (data.get(f"Tags.member.{n}.Value") or [""])[0]
        n += 1
    return values


access_control.format_incoming_conditional_values = format_incoming_conditional_values

_put_policy = Role.put_policy


def put_policy(self, policy_name, policy_json):
    if not isinstance(policy_json, str):
        policy_json = json.dumps(policy_json)
    _put_policy(self, policy_name, policy_json)


Role.put_policy = put_policy

def _tag_map(tags):
    """An IAM entity's tags, as moto keeps them, as a plain mapping."""
    if isinstance(tags, dict):
        return {k: (v.get("Value", "") if isinstance(v, dict) else v) for k, v in tags.items()}
    return {t.get("Key", ""): t.get("Value", "") for t in tags or []}


def _ec2_fact(ec2, rid):
    fact = {"tags": dict(ec2.tags.get(rid, {}))}
    prefix = rid.split("-", 1)[0]
    try:
        if prefix == "subnet":
            fact["vpc"] = ec2.get_subnet(rid).vpc_id
        elif prefix == "sg":
            group = ec2.get_security_group_from_id(rid)
            fact["vpc"] = group.vpc_id if group else None
        elif prefix == "rtb":
            fact["vpc"] = ec2.get_route_table(rid).vpc_id
        elif prefix == "rtbassoc":
            for table in ec2.route_tables.values():
                if rid in table._associations:
                    fact["routeTable"] = table.id
                    fact["subnet"] = table._associations[rid]
                    fact["tags"] = dict(ec2.tags.get(table.id, {}))
        elif prefix == "i":
            fact["vpc"] = ec2.get_instance(rid).vpc_id
        elif prefix == "ami":
            image = ec2.amis[rid]
            alias = image.owner_alias
            fact["owner"] = alias if alias in ("amazon", "aws-marketplace") else image.owner_id
            fact["public"] = bool(image.is_public)
        elif prefix == "snap":
            fact["owner"] = ec2.snapshots[rid].owner_id
        elif prefix == "pcx":
            pcx = ec2.vpc_pcxs[rid]
            fact["vpc"] = pcx.vpc.id
            fact["peerVpc"] = pcx.peer_vpc.id
            fact["peerOwner"] = pcx.peer_vpc.owner_id
            fact["peerRegion"] = pcx.peer_vpc.region
    except Exception as e:  # a resource moto does not hold: no fact
        fact["missing"] = str(e)
    return fact


def _policies(holder):
    """The documents of a role's or user's inline and attached policies
    (the default version of each): what AWS evaluates its requests
    against."""
    docs = []
    for text in holder.policies.values():
        docs.append(json.loads(text) if isinstance(text, str) else text)
    for policy in holder.managed_policies.values():
        for version in policy.versions:
            if version.is_default:
                doc = version.document
                docs.append(json.loads(doc) if isinstance(doc, str) else doc)
    return docs


def _caller(key):
    """The IAM user an access key belongs to, in any account: its ARN,
    account and policies (None: no user of moto's holds the key)."""
    for account in list(iam_backends):
        iam = iam_backends[account]["global"]
        for user in list(iam.users.values()):
            if any(k.access_key_id == key for k in user.access_keys):
                return {"arn": user.arn, "account": account, "policies": _policies(user)}
    return None


def facts(request, full_url, headers):
    """What AWS knows of the resources a request names (see the top)."""
    q = json.loads(request.get_data() or b"{}")
    account, region = q.get("account", ""), q.get("region", "us-east-1")
    ec2 = ec2_backends[account][region]
    iam = iam_backends[account]["global"]
    out = {"ec2": {}, "keyPairs": {}, "roles": {}, "profiles": {}, "callers": {},
           "queues": {}, "rules": {}, "logGroups": {}, "kmsKeys": {}}
    for key in q.get("callers", []):
        caller = _caller(key)
        if caller:
            out["callers"][key] = caller
    for rid in q.get("ec2", []):
        out["ec2"][rid] = _ec2_fact(ec2, rid)
    for name in q.get("keyPairs", []):
        pair = ec2.key_pairs.get(name)
        if pair:
            out["keyPairs"][name] = {"id": pair.id, "tags": dict(ec2.tags.get(pair.id, {}))}
    for name in q.get("roles", []):
        try:
            role = iam.get_role(name)
            out["roles"][name] = {
                "arn": role.arn,
                "tags": _tag_map(role.tags),
                "boundary": role.permissions_boundary_arn,
                "policies": _policies(role),
                "inline": {n: (json.loads(t) if isinstance(t, str) else t)
                           for n, t in role.policies.items()},
                "trust": json.loads(role.assume_role_policy_document)
                if isinstance(role.assume_role_policy_document, str)
                else role.assume_role_policy_document,
            }
        except Exception:
            pass
    for name in q.get("profiles", []):
        try:
            profile = iam.get_instance_profile(name)
            out["profiles"][name] = {
                "arn": profile.arn,
                "tags": _tag_map(profile.tags),
                "roles": [r.name for r in profile.roles],
            }
        except Exception:
            pass
    for name in q.get("queues", []):
        queue = sqs_backends[account][region].queues.get(name)
        if queue is not None:
            out["queues"][name] = {"tags": dict(queue.tags)}
    for name in q.get("rules", []):
        events = events_backends[account][region]
        rule = events.event_buses.get("default") and events.event_buses["default"].rules.get(name)
        if rule:
            out["rules"][name] = {"tags": events.tagger.get_tag_dict_for_resource(rule.arn)}
    for name in q.get("logGroups", []):
        logs = logs_backends[account][region]
        group = logs.groups.get(name)
        if group is not None:
            out["logGroups"][name] = {"tags": logs.tagger.get_tag_dict_for_resource(group.arn)}
    for ref in q.get("kmsKeys", []):
        kms = kms_backends[account][region]
        try:
            key_id = kms.any_id_to_key_id(ref)
        except Exception:
            key_id = None
        key = kms.keys.get(key_id) if key_id else None
        if key is not None:
            out["kmsKeys"][ref] = {"id": key.id, "arn": key.arn,
                                   "tags": kms.tagger.get_tag_dict_for_resource(key.id),
                                   "aliases": sorted(key.aliases),
                                   "policy": json.loads(key.policy) if isinstance(key.policy, str) else key.policy}
    return 200, {"Content-Type": "application/json"}, json.dumps(out)


def foreign_image(request, full_url, headers):
    """An image of another owner, public, in an account's region: what a
    team sees of AWS Marketplace or another account's shared images (moto
    loads only Amazon's). Body: {account, region, owner, source} (an image
    whose architecture and root device it copies)."""
    q = json.loads(request.get_data() or b"{}")
    ec2 = ec2_backends[q["account"]][q["region"]]
    source = ec2.amis[q["source"]]
    image_id = random_ami_id()
    image = Ami(
        ec2,
        image_id,
        source_ami=source,
        name=f"foreign-{image_id}",
        owner_id=q["owner"],
        public=True,
        root_device_name=source.root_device_name,
        root_device_type=source.root_device_type,
        region_name=q["region"],
    )
    ec2.amis[image_id] = image
    return 200, {"Content-Type": "application/json"}, json.dumps({"imageId": image_id})


def event(request, full_url, headers):
    """An event as an AWS service emits it onto an account's default bus in
    a region (EC2's spot warning, AWS Health's maintenance): delivered to
    the targets of the rules it matches. Body: {account, region, source,
    detailType, detail, resources, time (Unix seconds)}. A client's
    PutEvents with an `aws.*` source is refused by AWS
    (NotAuthorizedForSourceException), never by moto: only the ground
    emits these, here, past the client path."""
    q = json.loads(request.get_data() or b"{}")
    entry = {
        "Source": q["source"],
        "DetailType": q["detailType"],
        "Detail": json.dumps(q["detail"]),
        "Resources": q.get("resources", []),
    }
    if "time" in q:
        entry["Time"] = q["time"]
    events_backends[q["account"]][q["region"]].put_events([entry])
    return 200, {"Content-Type": "application/json"}, "{}"


def reclaim(request, full_url, headers):
    """AWS taking an instance back (a spot reclaim): terminated as by EC2
    itself. Body: {account, region, instance}."""
    q = json.loads(request.get_data() or b"{}")
    ec2_backends[q["account"]][q["region"]].terminate_instances([q["instance"]])
    return 200, {"Content-Type": "application/json"}, "{}"


def _delivers(rule, queue):
    """Whether AWS would put `rule`'s event into `queue`: moto delivers to
    any queue. AWS delivers only when the queue's policy lets
    events.amazonaws.com send (sqs:SendMessage on the queue, an
    aws:SourceArn condition, if any, naming the rule; EventBridge sends
    over TLS) and denies nothing of it, and never into a queue encrypted
    with a KMS key whose policy it is not granted (here: any KMS key)."""
    if getattr(queue, "kms_master_key_id", None):
        return False
    try:
        doc = json.loads(queue.policy) if queue.policy else None
    except ValueError:
        doc = None
    if not doc:
        return False

    def listed(v):
        return v if isinstance(v, list) else [v]

    def applies(st):
        principal = st.get("Principal", {})
        services = listed(principal.get("Service", [])) if isinstance(principal, dict) else []
        if principal != "*" and "events.amazonaws.com" not in services:
            return False
        actions = listed(st.get("Action", []))
        if not any(a in ("sqs:SendMessage", "sqs:*", "*") for a in actions):
            return False
        if not any(r in (queue.queue_arn, "*") for r in listed(st.get("Resource", "*"))):
            return False
        for op, keys in st.get("Condition", {}).items():
            for key, values in keys.items():
                values = [str(v) for v in listed(values)]
                if key.lower() == "aws:sourcearn" and op in ("ArnEquals", "StringEquals", "ArnLike", "StringLike"):
                    if not any(fnmatch.fnmatchcase(rule.arn, v) for v in values):
                        return False
                elif key.lower() == "aws:securetransport" and op == "Bool":
                    if "true" not in [v.lower() for v in values]:
                        return False
                else:
                    return False  # a condition this model does not know: not met
        return True

    statements = listed(doc.get("Statement", []))
    if any(st.get("Effect") == "Deny" and applies(st) for st in statements):
        return False
    return any(st.get("Effect") == "Allow" and applies(st) for st in statements)


_send_to_sqs_queue = EventsRule._send_to_sqs_queue


def send_to_sqs_queue(self, resource_id, event, group_id=None):
    queue = sqs_backends[self.account_id][self.region_name].queues.get(resource_id)
    if queue is not None and _delivers(self, queue):
        _send_to_sqs_queue(self, resource_id, event, group_id)


EventsRule._send_to_sqs_queue = send_to_sqs_queue

moto_api_urls.url_paths["{0}/moto-api/byoc/facts"] = facts
moto_api_urls.url_paths["{0}/moto-api/byoc/event"] = event
moto_api_urls.url_paths["{0}/moto-api/byoc/reclaim"] = reclaim
moto_api_urls.url_paths["{0}/moto-api/byoc/foreign-image"] = foreign_image

_modules = backends.list_of_moto_modules
backends.list_of_moto_modules = functools.cache(lambda: tuple(_modules()))

if __name__ == "__main__":
    sys.exit(main())
