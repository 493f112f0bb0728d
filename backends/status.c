#include "status.h"

const char *dy_strerror(int status)
{
    switch (status) {
#define DY_STATUS_TEXT(name, value, msg) case DY_##name: return msg;
        DY_STATUS_MAP(DY_STATUS_TEXT)
#undef DY_STATUS_TEXT
    }
    return "unknown status";
}

const char *dy_status_name(int status)
{
    switch (status) {
#define DY_STATUS_NAME(name, value, msg) case DY_##name: return #name;
        DY_STATUS_MAP(DY_STATUS_NAME)
#undef DY_STATUS_NAME
    }
    return "E_UNKNOWN";
}
