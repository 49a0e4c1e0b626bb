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
time with 500 clusters). Run with moto's own arguments.
"""

import functools
import sys

from moto import backends
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix
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

_modules = backends.list_of_moto_modules
backends.list_of_moto_modules = functools.cache(lambda: tuple(_modules()))

if __name__ == "__main__":
    sys.exit(main())
