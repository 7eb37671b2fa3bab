"""imagekit: build, lint, boot-test and publish Linux machine images for Amazon EC2.

The pipeline, one stage a module:  recipe -> rootfs -> image -> lint -> boot -> publish.
"""

__version__ = "0.1.0"
