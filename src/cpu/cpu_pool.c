/* A persistent thread pool whose callers never wait for a late worker.
 *
 * A task is offered to the workers as numbered slots; a worker that wakes
 * up takes a slot (its thread index) or, if the caller has already closed
 * the task, does nothing. The caller works on the task itself and, when it
 * runs out of work, closes it and waits only for the workers that took a
 * slot. So every task must hand out its work dynamically (a shared counter,
 * see cpu_claim), never by thread index: a worker descheduled by another
 * process (this runs on shared machines) costs nothing but its help.
 *
 * Slots and the task's generation share one atomic word, so a worker that
 * woke for an older task cannot take a slot of a newer one with the older
 * task's arguments.
 *
 * Waiting: workers and callers spin briefly (calls come back to back, one
 * per layer), yielding the core now and then (a spinning thread that
 * shares a core with the thread it waits for must let it run), then sleep
 * on a condition variable, so an idle pool costs no CPU.
 *
 * Concurrency: cpu_pool_run holds `dispatch` for the whole task. A second
 * caller does not wait for it (trylock fails): it runs its task alone on
 * its own thread, so two forwards on one context are both correct and
 * neither blocks the other. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cpu_internal.h"

/* Spin iterations before sleeping (~0.3 ms), and how often to yield. */
#define CPU_POOL_SPIN 16384
#define CPU_POOL_YIELD_EVERY 256

struct cpu_pool {
  int size; /* threads including the caller */
  pthread_t *workers;
  pthread_mutex_t dispatch; /* one task at a time */
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_cond_t done;
  atomic_uint_fast64_t ticket; /* generation << 32 | slots still open */
  atomic_int finished;         /* workers of the current task that are done */
  cpu_task_fn fn;              /* the current task, under lock */
  void *arg;
  int task_threads;
  bool stop;
};

typedef struct worker_start {
  cpu_pool *pool;
} worker_start;

static inline void cpu_relax(unsigned spins) {
  if (spins % CPU_POOL_YIELD_EVERY == CPU_POOL_YIELD_EVERY - 1) {
    sched_yield();
    return;
  }
#if defined(__x86_64__) || defined(__i386__)
  __asm__ __volatile__("pause");
#endif
}

static inline uint32_t generation_of(uint_fast64_t ticket) { return (uint32_t)(ticket >> 32); }

static void *worker_main(void *opaque) {
  cpu_pool *pool = ((worker_start *)opaque)->pool;
  free(opaque);
  uint32_t seen = 0;
  for (;;) {
    /* Wait for a new generation: spin, then sleep. */
    for (unsigned spins = 0;
         generation_of(atomic_load_explicit(&pool->ticket, memory_order_acquire)) == seen &&
         spins < CPU_POOL_SPIN;
         spins++)
      cpu_relax(spins);
    pthread_mutex_lock(&pool->lock);
    while (generation_of(atomic_load_explicit(&pool->ticket, memory_order_acquire)) == seen &&
           !pool->stop)
      pthread_cond_wait(&pool->wake, &pool->lock);
    if (pool->stop) {
      pthread_mutex_unlock(&pool->lock);
      return NULL;
    }
    /* The task's function, argument and generation, consistently. */
    const cpu_task_fn fn = pool->fn;
    void *arg = pool->arg;
    const int threads = pool->task_threads;
    seen = generation_of(atomic_load_explicit(&pool->ticket, memory_order_acquire));
    pthread_mutex_unlock(&pool->lock);

    /* Take a slot of that generation, if one is still open. */
    uint_fast64_t ticket = atomic_load_explicit(&pool->ticket, memory_order_acquire);
    while (generation_of(ticket) == seen && (ticket & 0xFFFFFFFFu) != 0) {
      if (atomic_compare_exchange_weak_explicit(&pool->ticket, &ticket, ticket - 1,
                                                memory_order_acq_rel, memory_order_acquire)) {
        fn(arg, (int)(ticket & 0xFFFFFFFFu), threads); /* index 1..threads-1, unique */
        atomic_fetch_add_explicit(&pool->finished, 1, memory_order_acq_rel);
        pthread_mutex_lock(&pool->lock);
        pthread_cond_signal(&pool->done);
        pthread_mutex_unlock(&pool->lock);
        break;
      }
    }
  }
}

fp8gemm_status cpu_pool_create(int thread_count, cpu_pool **out) {
  *out = NULL;
  if (thread_count < 1) thread_count = 1;
  cpu_pool *pool = calloc(1, sizeof *pool);
  if (!pool) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "cpu backend: thread pool");
  pool->size = thread_count;
  pthread_mutex_init(&pool->dispatch, NULL);
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->wake, NULL);
  pthread_cond_init(&pool->done, NULL);
  atomic_init(&pool->ticket, 0);
  atomic_init(&pool->finished, 0);
  if (thread_count > 1) {
    pool->workers = calloc((size_t)thread_count - 1, sizeof *pool->workers);
    if (!pool->workers) {
      pool->size = 1;
      cpu_pool_destroy(pool);
      return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "cpu backend: thread pool");
    }
    for (int i = 1; i < thread_count; i++) {
      worker_start *start = malloc(sizeof *start);
      int rc = start ? 0 : -1;
      if (start) {
        start->pool = pool;
        rc = pthread_create(&pool->workers[i - 1], NULL, worker_main, start);
        if (rc != 0) free(start);
      }
      if (rc != 0) {
        pool->size = i; /* the workers started so far are joined by destroy */
        cpu_pool_destroy(pool);
        return fp8gemm_set_error(FP8GEMM_ERROR_BACKEND,
                                 "cpu backend: could not start worker thread %d of %d", i,
                                 thread_count);
      }
    }
  }
  *out = pool;
  return FP8GEMM_OK;
}

void cpu_pool_destroy(cpu_pool *pool) {
  if (!pool) return;
  pthread_mutex_lock(&pool->lock);
  pool->stop = true;
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->lock);
  for (int i = 1; i < pool->size; i++) pthread_join(pool->workers[i - 1], NULL);
  free(pool->workers);
  pthread_cond_destroy(&pool->wake);
  pthread_cond_destroy(&pool->done);
  pthread_mutex_destroy(&pool->lock);
  pthread_mutex_destroy(&pool->dispatch);
  free(pool);
}

int cpu_pool_size(const cpu_pool *pool) { return pool->size; }

void cpu_pool_run(cpu_pool *pool, int want_threads, cpu_task_fn fn, void *arg) {
  const int threads = want_threads < pool->size ? want_threads : pool->size;
  if (threads <= 1 || pthread_mutex_trylock(&pool->dispatch) != 0) {
    fn(arg, 0, 1);
    return;
  }
  pthread_mutex_lock(&pool->lock);
  pool->fn = fn;
  pool->arg = arg;
  pool->task_threads = threads;
  atomic_store_explicit(&pool->finished, 0, memory_order_relaxed);
  const uint32_t generation =
      generation_of(atomic_load_explicit(&pool->ticket, memory_order_relaxed)) + 1;
  atomic_store_explicit(&pool->ticket, ((uint_fast64_t)generation << 32) | (uint32_t)(threads - 1),
                        memory_order_release);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->lock);

  fn(arg, 0, threads);

  /* Close the task: slots not taken by now never will be. */
  const uint_fast64_t left = atomic_exchange_explicit(
      &pool->ticket, (uint_fast64_t)generation << 32, memory_order_acq_rel);
  const int joined = threads - 1 - (int)(left & 0xFFFFFFFFu);
  for (unsigned spins = 0;
       atomic_load_explicit(&pool->finished, memory_order_acquire) < joined && spins < CPU_POOL_SPIN;
       spins++)
    cpu_relax(spins);
  pthread_mutex_lock(&pool->lock);
  while (atomic_load_explicit(&pool->finished, memory_order_acquire) < joined)
    pthread_cond_wait(&pool->done, &pool->lock);
  pthread_mutex_unlock(&pool->lock);
  pthread_mutex_unlock(&pool->dispatch);
}
