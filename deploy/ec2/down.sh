#!/usr/bin/env bash
# Deletes Baton's benchmark cluster: empties its bucket, then deletes the stack (instances,
# placement group, role, security group, bucket) and waits until it is gone.
#
#   deploy/ec2/down.sh STACK
set -euo pipefail
if [ "$#" -ne 1 ]; then
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
stack=$1
region=$(aws configure get region || true)
region=${AWS_REGION:-${region:-us-east-1}}
bucket=$(aws cloudformation describe-stacks --region "$region" --stack-name "$stack" \
  --query "Stacks[0].Outputs[?OutputKey=='Bucket'].OutputValue" --output text)
if [ -n "$bucket" ] && [ "$bucket" != "None" ]; then
  aws s3 rm --region "$region" "s3://$bucket" --recursive --only-show-errors
fi
aws cloudformation delete-stack --region "$region" --stack-name "$stack"
aws cloudformation wait stack-delete-complete --region "$region" --stack-name "$stack"
echo "stack $stack deleted"
