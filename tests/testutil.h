/* testutil.h: helpers shared by the Check suites. */
#ifndef OQ_TESTUTIL_H
#define OQ_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

/* The shared models/data folder: $OQ_SHARED_DIR, else ../shared beside the repo. */
const char *tu_shared_dir(void);
/* tu_shared_dir() + "/" + rel into a static rotating buffer. */
const char *tu_shared_path(const char *rel);
/* Reads a whole file into a malloc'd buffer; NULL on failure. */
uint8_t *tu_read_file(const char *path, size_t *len);
/* A fresh empty temporary folder (removed by tu_rmtree). */
char *tu_mkdtemp(void);
void tu_rmtree(const char *dir);
/* Runs a suite, prints results, returns the process exit status. */
int tu_run_suite(Suite *s);

#endif
