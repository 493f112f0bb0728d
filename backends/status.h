/* Status codes shared by every dyno module: one X-macro table of codes and
 * messages, as libuv's UV_ERRNO_MAP. Backends translate vendor errors into
 * these at their boundary and keep the vendor's own text in last_error. */
#ifndef DY_STATUS_H
#define DY_STATUS_H

#define DY_STATUS_MAP(X)                                                     \
    X(OK, 0, "ok")                                                           \
    X(E_NOMEM, -1, "out of memory")                                          \
    X(E_UNSUPPORTED, -2, "not supported by this backend")                    \
    X(E_INVALID, -3, "invalid argument")                                     \
    X(E_NODEVICE, -4, "no device available")                                 \
    X(E_DEVICE, -5, "device error")                                          \
    X(E_IO, -6, "input/output error")                                        \
    X(E_FORMAT, -7, "malformed input")                                       \
    X(E_DB, -8, "database error")                                            \
    X(E_MISMATCH, -9, "results do not match the reference")                  \
    X(E_TIMEOUT, -10, "timed out")

enum dy_status {
#define DY_STATUS_ENUM(name, value, msg) DY_##name = (value),
    DY_STATUS_MAP(DY_STATUS_ENUM)
#undef DY_STATUS_ENUM
};

/* Static text for a status code; never NULL. */
const char *dy_strerror(int status);
/* Short identifier ("E_NOMEM") for a status code; never NULL. */
const char *dy_status_name(int status);

#endif
