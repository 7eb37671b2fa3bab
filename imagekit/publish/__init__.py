"""Publishing: turn a built raw image into AMIs in the regions asked for, idempotently.

The pipeline (`imagekit.publish.pipeline.publish`) reads like the job:
find what is already published -> upload (the request's uploader, `uploaders.py`: EBS direct or
S3 + ImportSnapshot) -> register -> tag and share -> copy to other regions -> record. Each step is a
module here.
"""
