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
it; AWS answers the JSON document. Run with moto's own arguments.
"""

import functools
import json
import sys

from moto import backends
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix
from moto.iam.models import Role
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

_put_policy = Role.put_policy


def put_policy(self, policy_name, policy_json):
    if not isinstance(policy_json, str):
        policy_json = json.dumps(policy_json)
    _put_policy(self, policy_name, policy_json)


Role.put_policy = put_policy

_modules = backends.list_of_moto_modules
backends.list_of_moto_modules = functools.cache(lambda: tuple(_modules()))

if __name__ == "__main__":
    sys.exit(main())
