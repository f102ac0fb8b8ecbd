#!/bin/bash
# Traffic through a tunnel whose peers are inline.
. /mnt/kmod/harness/guest/traffic.sh inline
