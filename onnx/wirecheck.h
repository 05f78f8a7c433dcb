/* wirecheck.h: validates protobuf wire bytes against a message descriptor
 * before protobuf-c unpacks them. protobuf-c recurses without a depth limit
 * and reports no position; this pass bounds nesting and names the exact
 * field path and byte offset of the first defect. */
#ifndef OQ_WIRECHECK_H
#define OQ_WIRECHECK_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Checks that data[0..len) is a well-formed encoding of desc: every tag,
 * varint and length in bounds, wire types matching known fields, packed
 * payloads whole, no groups, strings without NUL bytes, and message nesting
 * at most max_depth. root names the message in errors ("model").
 * *unpacked (optional) receives an estimate, from above, of the bytes
 * protobuf-c will allocate to unpack it (message structs, arrays, strings;
 * a packed int64 varint of 1 byte becomes 8), so callers can refuse a
 * message before allocating anything. */
oq_status oq_wire_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                        size_t len, int max_depth, const char *root, size_t *unpacked,
                        oq_error *err);

/* Allocation overhead the estimate charges per block (the budget
 * allocator's header). */
#define OQ_WIRE_BLOCK_OVERHEAD 16

#endif
