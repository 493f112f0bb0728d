/* What a kernel launch costs on an OpenCL driver (issue 4: the decode step
 * through NVIDIA's OpenCL is bound by its hundred launches), by the buffers
 * the kernel takes and whether the queue has profiling on. For each case it
 * enqueues 2,000 launches of a kernel that does nothing (one work-group of
 * 32 items, ten arguments) and prints
 *   - host: microseconds the host spends in clSetKernelArg and
 *     clEnqueueNDRangeKernel a launch;
 *   - wall: microseconds a launch from the first enqueue to clFinish;
 *   - gated: microseconds a launch when all 2,000 wait behind a user event
 *     that is set complete after the last enqueue (the driver's and the
 *     device's share without the host's enqueue in the way).
 * The cases: ten distinct buffers; one buffer ten times; ten sub-buffers
 * of one buffer; one buffer and nine integer offsets; two and four
 * distinct buffers (the rest integers).
 *
 * Build here: gcc -O2 bench/cuda/ocl_enqueue_probe.c -lOpenCL -o .carry/ocl_enqueue_probe
 * Run there: .carry/ocl_enqueue_probe [PLATFORM_SUBSTRING] (default "NVIDIA"). */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LAUNCHES 2000
#define SUB_BYTES (1 << 20)

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/* `bufs` of the ten arguments are buffers, the rest ints; each launch
 * touches none of them (n is never negative) */
static const char *source =
    "#define B __global float *\n"
    "__kernel void b10(B a, B b, B c, B d, B e, B f, B g, B h, B i, B j, int n)\n"
    "{ if (n < 0) a[0] = b[0] + c[0] + d[0] + e[0] + f[0] + g[0] + h[0] + i[0] + j[0]; }\n"
    "__kernel void b4(B a, B b, B c, B d, int e, int f, int g, int h, int i, int j, int n)\n"
    "{ if (n < 0) a[e] = b[f] + c[g] + d[h] + a[i + j]; }\n"
    "__kernel void b2(B a, B b, int c, int d, int e, int f, int g, int h, int i, int j, int n)\n"
    "{ if (n < 0) a[c] = b[d] + a[e + f + g + h + i + j]; }\n"
    "__kernel void b1(B a, int b, int c, int d, int e, int f, int g, int h, int i, int j, int n)\n"
    "{ if (n < 0) a[b] = a[c + d + e + f + g + h + i + j]; }\n";

struct probe_case {
    const char *name;
    const char *kernel;
    int bufs;     /* buffer arguments first */
    int which;    /* 0: distinct buffers, 1: one buffer repeated, 2: sub-buffers */
};

static const struct probe_case cases[] = {
    { "10 distinct buffers", "b10", 10, 0 }, { "1 buffer x 10", "b10", 10, 1 },
    { "10 sub-buffers of 1", "b10", 10, 2 }, { "1 buffer + 9 ints", "b1", 1, 0 },
    { "2 buffers + 8 ints", "b2", 2, 0 },    { "4 buffers + 6 ints", "b4", 4, 0 },
};

static void die(const char *what, cl_int err)
{
    fprintf(stderr, "ocl_enqueue_probe: %s failed (%d)\n", what, (int)err);
    exit(1);
}

/* the arguments of launch `it`: buffers rotate so none is set twice in a row */
static void set_args(cl_kernel k, const struct probe_case *pc, cl_mem *distinct, cl_mem *subs, int it)
{
    for (int i = 0; i < 10; i++) {
        if (i < pc->bufs) {
            cl_mem m = pc->which == 1 ? distinct[it % 10] : pc->which == 2 ? subs[(i + it) % 10]
                                                                         : distinct[(i + it) % 10];
            clSetKernelArg(k, (cl_uint)i, sizeof m, &m);
        } else {
            int v = i + it % 7;
            clSetKernelArg(k, (cl_uint)i, sizeof v, &v);
        }
    }
    int n = 1;
    clSetKernelArg(k, 10, sizeof n, &n);
}

static void run_case(cl_context ctx, cl_command_queue q, cl_kernel k, const struct probe_case *pc,
                     cl_mem *distinct, cl_mem *subs, const char *queue_name)
{
    size_t global = 32, local = 32;
    double host = 0.0, wall = 0.0;
    for (int pass = 0; pass < 2; pass++) { /* the first warms the driver */
        clFinish(q);
        double t0 = now_us();
        host = 0.0;
        for (int it = 0; it < LAUNCHES; it++) {
            double a = now_us();
            set_args(k, pc, distinct, subs, it);
            cl_int err = clEnqueueNDRangeKernel(q, k, 1, NULL, &global, &local, 0, NULL, NULL);
            if (err != CL_SUCCESS)
                die("clEnqueueNDRangeKernel", err);
            host += now_us() - a;
        }
        clFinish(q);
        wall = now_us() - t0;
    }
    cl_int err;
    cl_event gate = clCreateUserEvent(ctx, &err);
    if (!gate)
        die("clCreateUserEvent", err);
    for (int it = 0; it < LAUNCHES; it++) {
        set_args(k, pc, distinct, subs, it);
        err = clEnqueueNDRangeKernel(q, k, 1, NULL, &global, &local, it == 0 ? 1 : 0, it == 0 ? &gate : NULL,
                                     NULL);
        if (err != CL_SUCCESS)
            die("clEnqueueNDRangeKernel (gated)", err);
    }
    clFlush(q);
    double t0 = now_us();
    clSetUserEventStatus(gate, CL_COMPLETE);
    clFinish(q);
    double gated = now_us() - t0;
    clReleaseEvent(gate);
    printf("%-10s %-22s host %6.2f  wall %6.2f  gated %6.2f us a launch\n", queue_name, pc->name,
           host / LAUNCHES, wall / LAUNCHES, gated / LAUNCHES);
}

int main(int argc, char **argv)
{
    const char *want = argc > 1 ? argv[1] : "NVIDIA";
    cl_uint np = 0;
    cl_platform_id platforms[16];
    if (clGetPlatformIDs(16, platforms, &np) != CL_SUCCESS || np == 0)
        die("clGetPlatformIDs", -1);
    cl_device_id dev = NULL;
    for (cl_uint i = 0; i < np && i < 16 && !dev; i++) {
        char name[256] = "";
        clGetPlatformInfo(platforms[i], CL_PLATFORM_NAME, sizeof name, name, NULL);
        if (strstr(name, want) && clGetDeviceIDs(platforms[i], CL_DEVICE_TYPE_ALL, 1, &dev, NULL) == CL_SUCCESS) {
            char dname[256] = "";
            clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof dname, dname, NULL);
            printf("platform %s, device %s\n", name, dname);
        }
    }
    if (!dev) {
        fprintf(stderr, "ocl_enqueue_probe: no platform named like \"%s\" with a device\n", want);
        return 1;
    }
    cl_int err;
    cl_context ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    if (!ctx)
        die("clCreateContext", err);
    cl_program prog = clCreateProgramWithSource(ctx, 1, &source, NULL, &err);
    if (!prog || (err = clBuildProgram(prog, 1, &dev, "", NULL, NULL)) != CL_SUCCESS)
        die("clBuildProgram", err);
    cl_mem distinct[10], subs[10];
    cl_uint align = 0; /* bits */
    clGetDeviceInfo(dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align, &align, NULL);
    size_t step = SUB_BYTES > align / 8 ? SUB_BYTES : align / 8;
    cl_mem parent = clCreateBuffer(ctx, CL_MEM_READ_WRITE, 10 * step, NULL, &err);
    if (!parent)
        die("clCreateBuffer", err);
    for (int i = 0; i < 10; i++) {
        distinct[i] = clCreateBuffer(ctx, CL_MEM_READ_WRITE, SUB_BYTES, NULL, &err);
        cl_buffer_region region = { (size_t)i * step, SUB_BYTES };
        subs[i] = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &region, &err);
        if (!distinct[i] || !subs[i])
            die("clCreateBuffer/clCreateSubBuffer", err);
    }
    for (int prof = 0; prof < 2; prof++) {
        cl_command_queue q = clCreateCommandQueue(ctx, dev, prof ? CL_QUEUE_PROFILING_ENABLE : 0, &err);
        if (!q)
            die("clCreateCommandQueue", err);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            cl_kernel k = clCreateKernel(prog, cases[c].kernel, &err);
            if (!k)
                die("clCreateKernel", err);
            run_case(ctx, q, k, &cases[c], distinct, subs, prof ? "profiling" : "plain");
            clReleaseKernel(k);
        }
        clReleaseCommandQueue(q);
    }
    for (int i = 0; i < 10; i++) {
        clReleaseMemObject(subs[i]);
        clReleaseMemObject(distinct[i]);
    }
    clReleaseMemObject(parent);
    clReleaseProgram(prog);
    clReleaseContext(ctx);
    return 0;
}
