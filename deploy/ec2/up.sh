#!/usr/bin/env bash
# Creates Baton's benchmark cluster on EC2 (deploy/ec2/baton-bench.yaml) and writes the ssh
# inventory the suite's ssh profile reads. Needs the AWS CLI, credentials, and a key pair.
#
#   deploy/ec2/up.sh STACK KEY_NAME VPC_ID SUBNET_ID ADMIN_CIDR [INSTANCE_TYPE] [HOSTS]
#
# Writes STACK.inventory.toml (hosts by private address: the driver runs on the first host) and
# prints the commands that run the suite there. deploy/ec2/down.sh STACK removes everything.
set -euo pipefail
if [ "$#" -lt 5 ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
stack=$1 key=$2 vpc=$3 subnet=$4 admin=$5 type=${6:-c5n.2xlarge} hosts=${7:-4}
here=$(cd "$(dirname "$0")" && pwd)
region=$(aws configure get region || true)
region=${AWS_REGION:-${region:-us-east-1}}

aws cloudformation deploy --region "$region" --stack-name "$stack" \
  --template-file "$here/baton-bench.yaml" --capabilities CAPABILITY_IAM \
  --parameter-overrides "KeyName=$key" "VpcId=$vpc" "SubnetId=$subnet" "AdminCidr=$admin" \
  "InstanceType=$type" "Hosts=$hosts"

output() {
  aws cloudformation describe-stacks --region "$region" --stack-name "$stack" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}
bucket=$(output Bucket)
group=$(output Group)

# Until every instance of the group runs.
for _ in $(seq 1 60); do
  running=$(aws ec2 describe-instances --region "$region" \
    --filters "Name=tag:aws:autoscaling:groupName,Values=$group" "Name=instance-state-name,Values=running" \
    --query 'length(Reservations[].Instances[])' --output text)
  [ "$running" -ge "$hosts" ] && break
  sleep 10
done
[ "$running" -ge "$hosts" ] || { echo "only $running of $hosts instances run" >&2; exit 1; }

addresses=$(aws ec2 describe-instances --region "$region" \
  --filters "Name=tag:aws:autoscaling:groupName,Values=$group" "Name=instance-state-name,Values=running" \
  --query 'Reservations[].Instances[].[PrivateIpAddress,PublicIpAddress]' --output text | sort)
gbit=$(case "$type" in c5n.2xlarge) echo 10.0;; c6in.2xlarge) echo 12.5;; m6i.4xlarge) echo 6.25;; i4i.4xlarge) echo 12.5;; *) echo 10.0;; esac)
cores=$(case "$type" in c5n.2xlarge|c6in.2xlarge) echo 8;; *) echo 16;; esac)

inventory="$stack.inventory.toml"
umask 077
{
  echo "# Written by deploy/ec2/up.sh for stack $stack ($hosts x $type in $region)."
  echo 'user = "admin"'
  echo 'ssh_options = ["StrictHostKeyChecking=accept-new"]'
  echo "objects = \"s3://$bucket/baton\""
  echo 'workers = 2'
  echo '[environment]'
  echo "AWS_REGION = \"$region\""
  i=0
  while read -r private public; do
    echo '[[hosts]]'
    echo "name = \"h$i\""
    echo "address = \"$private\""
    echo "cores = $cores"
    echo "nic_gbps = $gbit"
    echo "# public address: $public"
    i=$((i + 1))
  done <<< "$addresses"
} > "$inventory"

first=$(echo "$addresses" | head -1 | awk '{print $2}')
cat <<MSG
inventory: $inventory (bucket s3://$bucket)
Run the suite from the first host, with your key forwarded so it reaches the others:
  scp baton $inventory admin@$first:
  ssh -A admin@$first ./baton bench suite --profile ssh --inventory $inventory --out suite
  scp -r admin@$first:suite .
Then: deploy/ec2/down.sh $stack
MSG
