/* mmkit/sparse.h: huge lazily committed arrays. */
#ifndef MMKIT_SPARSE_H
#define MMKIT_SPARSE_H

#include <mmkit/common.h>

#endif
