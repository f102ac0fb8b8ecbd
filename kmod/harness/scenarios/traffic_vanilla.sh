#!/bin/bash
# Traffic through a tunnel whose peers are vanilla.
. /mnt/kmod/harness/guest/traffic.sh vanilla
