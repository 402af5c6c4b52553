"""ferryman runtimes: the native ONNX server, the gateway, the Ray Serve app and the KServe contract."""
