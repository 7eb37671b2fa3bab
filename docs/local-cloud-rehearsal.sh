export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://127.0.0.1:5000} AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=rehearsal AWS_SECRET_ACCESS_KEY=rehearsal          # any credentials work
export IMAGEKIT_PUBLISHED=${IMAGEKIT_PUBLISHED:-$PWD/rehearsal-published.json}  # not the real record
IMAGE=${IMAGE:-out/debian-12-pvgrub-hd0.img}       # what scripts/build-and-boot wrote
NAME=${NAME:-debian-12-pvgrub-rehearsal-1}
FLAGS=${FLAGS:-}                                   # e.g. --no-lint for an image linted already

# every call it would make, none sent
imagekit publish "$IMAGE" --name "$NAME" --region us-east-1 --dry-run $FLAGS
# upload, register, copy: one AMI id per region on stdout
imagekit publish "$IMAGE" --name "$NAME" --region us-east-1 --copy-to eu-west-1,us-west-2 \
    --public --tag team=images $FLAGS
# again: nothing is uploaded or registered, the same ids
imagekit publish "$IMAGE" --name "$NAME" --region us-east-1 --copy-to eu-west-1,us-west-2 $FLAGS
imagekit published --name "$NAME"

# what was registered, as the AWS CLI sees it
ami=$(aws ec2 describe-images --owners self --filters "Name=name,Values=$NAME" \
    --query 'Images[0].ImageId' --output text)
aws ec2 describe-images --image-ids "$ami" \
    --query 'Images[0].[ImageId,VirtualizationType,KernelId,RootDeviceName]' --output text

# the ImportSnapshot path: a bucket and the vmimport role first (without the role the import is refused)
aws s3api create-bucket --bucket rehearsal-images
aws iam create-role --role-name vmimport \
    --assume-role-policy-document file://docs/vmimport-trust-policy.json
imagekit publish "$IMAGE" --name "$NAME-import" --region us-east-1 \
    --method import-snapshot --bucket rehearsal-images $FLAGS
