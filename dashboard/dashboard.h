/* The dashboard commands: `dyno report` (one self-contained HTML file) and
 * `dyno compare` (the device comparison as a markdown table). Both read a
 * results database and never write to it. */
#ifndef DY_DASHBOARD_H
#define DY_DASHBOARD_H

#include <sqlite3.h>
#include <stddef.h>

int dy_cmd_report(int argc, char **argv);
int dy_cmd_compare(int argc, char **argv);

/* ---- rdb.c: read-only access shared by both commands ---- */

/* Opens PATH read-only and checks that it is a dyno database, so a report
 * of a foreign or missing file fails with a message naming it instead of
 * creating or touching anything. Caller closes with sqlite3_close. */
int dy_rdb_open(const char *path, sqlite3 **out, char *err, size_t err_len);

#endif
