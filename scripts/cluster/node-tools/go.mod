// Small static programs for the test cluster's real node (built by scripts/cluster/node-build.sh):
// pause (the pod sandbox image) and probe (the node test image's HTTP server and network checks).
module ferryman.local/node-tools

go 1.22
