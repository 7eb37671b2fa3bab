"""An offline AWS to rehearse a publish against: moto's server, extended where EC2 matters to us.

moto 5.2.5 implements S3 and the EBS direct APIs but not ImportSnapshot, and its RegisterImage
keeps little beyond the name. `imagekit local-cloud` patches those in (see `ec2_images` and
`ec2_imports`) and serves everything on 127.0.0.1 over HTTP, so boto3 reaches it with an
endpoint URL exactly as it reaches AWS.
"""

from imagekit.localcloud.server import LocalCloud, serve

__all__ = ["LocalCloud", "serve"]
