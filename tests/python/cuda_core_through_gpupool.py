"""cuda.core, NVIDIA's Python API over the driver, through gpupool: a kernel
compiled by NVRTC to a cubin and to PTX, launched on a stream with memory
from the device's pool; timed events; a graph built by stream capture; the
device's PCI address; and a pool shared with a child process (spawned by
multiprocessing), which reads an allocation of it and writes it back.

Each check prints one line; the test reads them.
"""

import multiprocessing as mp
import re

import numpy as np

N = 4096

SAXPY = r"""
extern "C" __global__ void gp_saxpy(int n, float a, const float* x, float* y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}
"""


def copy_in(buf, host, stream):
    import cuda.bindings.driver as drv

    (err,) = drv.cuMemcpyHtoDAsync(int(buf.handle), host.ctypes.data, host.nbytes, int(stream.handle))
    assert err == drv.CUresult.CUDA_SUCCESS, err


def copy_out(buf, host, stream):
    import cuda.bindings.driver as drv

    (err,) = drv.cuMemcpyDtoHAsync(host.ctypes.data, int(buf.handle), host.nbytes, int(stream.handle))
    assert err == drv.CUresult.CUDA_SUCCESS, err
    stream.sync()


def child(mr, buf, results):
    from cuda.core import Device

    d = Device(0)
    d.set_current()
    s = d.create_stream()
    seen = np.empty(N, dtype=np.float32)
    copy_out(buf, seen, s)
    copy_in(buf, np.full(N, 2.0, dtype=np.float32), s)
    s.sync()
    buf.close(s)
    results.put(bool(np.array_equal(seen, np.arange(N, dtype=np.float32))))


def main():
    from cuda.core import (
        Device,
        DeviceMemoryResource,
        DeviceMemoryResourceOptions,
        EventOptions,
        LaunchConfig,
        Program,
        ProgramOptions,
        launch,
    )

    d = Device(0)
    d.set_current()
    s = d.create_stream()
    # The driver writes a four-digit domain, 12 characters.
    print("pci", d.pci_bus_id, bool(re.fullmatch(r"[0-9A-F]{4}:[0-9A-F]{2}:[0-9A-F]{2}\.0", d.pci_bus_id)))

    arch = "sm_" + "".join(str(c) for c in d.compute_capability)
    program = Program(SAXPY, code_type="c++", options=ProgramOptions(arch=arch))
    x = np.arange(N, dtype=np.float32)
    for target in ("cubin", "ptx"):
        kernel = program.compile(target).get_kernel("gp_saxpy")
        bx = d.memory_resource.allocate(N * 4, stream=s)
        by = d.memory_resource.allocate(N * 4, stream=s)
        copy_in(bx, x, s)
        copy_in(by, np.ones(N, dtype=np.float32), s)
        launch(s, LaunchConfig(grid=(N + 255) // 256, block=256), kernel, np.int32(N), np.float32(3.0), bx, by)
        y = np.empty(N, dtype=np.float32)
        copy_out(by, y, s)
        print("saxpy", target, bool(np.array_equal(y, 3 * x + 1)))
        bx.close(s)
        by.close(s)

    timed = EventOptions(timing_enabled=True)
    start = s.record(options=timed)
    gb = s.create_graph_builder()
    gb.begin_building()
    launch(gb, LaunchConfig(grid=1, block=32), kernel, np.int32(0), np.float32(1.0), 0, 0)
    graph = gb.end_building().complete()
    graph.launch(s)
    end = s.record(options=timed)
    end.sync()
    print("graph and timing", (end - start) >= 0)

    mr = DeviceMemoryResource(d, options=DeviceMemoryResourceOptions(ipc_enabled=True, max_size=1 << 26))
    buf = mr.allocate(N * 4, stream=s)
    copy_in(buf, x, s)
    s.sync()
    results = mp.Queue()
    p = mp.Process(target=child, args=(mr, buf, results))
    p.start()
    read = results.get(timeout=120)
    p.join(120)
    back = np.empty(N, dtype=np.float32)
    copy_out(buf, back, s)
    print("shared pool", read, p.exitcode, bool(np.all(back == 2.0)))


if __name__ == "__main__":
    mp.set_start_method("spawn")
    main()
