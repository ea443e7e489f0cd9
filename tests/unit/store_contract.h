/* store_contract.h — the behaviour every store backend must show (store.h),
 * as cmocka tests that any backend's test file runs against its own URIs.
 *
 * A backend's test file describes how to get an empty database and how to
 * peek into it with raw SQL (the table and column names are the same on every
 * backend), then appends the contract tests to its own:
 *
 *	static const struct store_contract_backend be = {.name = "postgres", .fresh = …, …};
 *	struct CMUnitTest t[64];
 *	size_t n = store_contract_tests(&be, t, 64);
 *	t[n++] = (struct CMUnitTest)cmocka_unit_test(test_backend_specific);
 *	return _cmocka_run_group_tests("store_postgres", t, n, NULL, NULL);
 *
 * Every contract test opens its own fresh database (setup) and drops it
 * afterwards (teardown). */
#ifndef TL_TEST_STORE_CONTRACT_H
#define TL_TEST_STORE_CONTRACT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

struct store_contract_backend {
	const char *name; /* "sqlite", "postgres" */
	void *arg;        /* passed to every hook */
	/* Creates an empty database and writes a URI for it (NUL-terminated, < cap). 0 or -1. */
	int (*fresh)(void *arg, char *uri, size_t cap);
	/* Removes the database fresh() made (after every store on it is closed). */
	void (*drop)(void *arg, const char *uri);
	/* Runs a query returning one integer, directly on the database. */
	int64_t (*raw_int)(void *arg, const char *uri, const char *sql);
	/* Runs a statement directly on the database; 0 or -1. */
	int (*raw_exec)(void *arg, const char *uri, const char *sql);
};

/* Writes the contract tests into tests[] (at most cap; the contract has
 * fewer than 24) with b as their initial state; returns how many. b must
 * outlive the run. */
size_t store_contract_tests(const struct store_contract_backend *b, struct CMUnitTest *tests, size_t cap);

#endif
