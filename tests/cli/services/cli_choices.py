"""Two builders and a non-service attribute: the loader must ask which one."""

from __future__ import annotations

import wireframe as wf

first = wf.ServiceBuilder()
second = wf.ServiceBuilder()
service = second.build  # a callable returning a Service (it raises: no layers -> still a Service)
number = 42
