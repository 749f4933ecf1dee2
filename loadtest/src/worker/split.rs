//! How one step's follower sockets are spread over the processes.
//!
//! Follower slots are numbered clinic by clinic: slot `clinic * followers +
//! number`. Each process takes one contiguous range of slots, so a worker
//! receives the keys of only the clinics it follows. The coordinator already
//! has every publisher socket, so it takes fewer followers, and every
//! process ends up with about the same number of sockets, which is what the
//! file descriptor limit of a process counts.

use std::ops::Range;

/// The follower slots of each process; index 0 is the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerSplit {
    followers_per_clinic: usize,
    ranges: Vec<Range<usize>>,
}

impl FollowerSplit {
    /// Spreads `clinics * followers` follower slots over `processes` processes.
    pub fn new(clinics: usize, followers: usize, processes: usize) -> FollowerSplit {
        let processes = processes.max(1);
        let slots = clinics * followers;
        let sockets = clinics * (followers + 1);
        let coordinator = if processes == 1 {
            slots
        } else {
            sockets
                .div_ceil(processes)
                .saturating_sub(clinics)
                .min(slots)
        };

        let mut ranges = Vec::with_capacity(processes);
        ranges.push(0..coordinator);
        let workers = processes - 1;
        let remaining = slots - coordinator;
        let mut next = coordinator;
        for worker in 0..workers {
            let share = remaining / workers + usize::from(worker < remaining % workers);
            ranges.push(next..next + share);
            next += share;
        }
        FollowerSplit {
            followers_per_clinic: followers,
            ranges,
        }
    }

    /// Returns the followers per clinic over all processes.
    pub fn followers_per_clinic(&self) -> usize {
        self.followers_per_clinic
    }

    /// Returns the number of processes, the coordinator included.
    pub fn processes(&self) -> usize {
        self.ranges.len()
    }

    /// Returns the follower slots of process `process`.
    pub fn slots(&self, process: usize) -> Range<usize> {
        self.ranges.get(process).cloned().unwrap_or(0..0)
    }

    /// Returns the followers of process `process` by clinic: each clinic
    /// index with the follower numbers of that clinic, in order.
    pub fn clinics_of(&self, process: usize) -> Vec<(usize, Vec<usize>)> {
        let mut clinics: Vec<(usize, Vec<usize>)> = Vec::new();
        if self.followers_per_clinic == 0 {
            return clinics;
        }
        for slot in self.slots(process) {
            let clinic = slot / self.followers_per_clinic;
            let number = slot % self.followers_per_clinic;
            match clinics.last_mut() {
                Some((last, numbers)) if *last == clinic => numbers.push(number),
                _ => clinics.push((clinic, vec![number])),
            }
        }
        clinics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockets(split: &FollowerSplit, process: usize, clinics: usize) -> usize {
        let followers = split.slots(process).len();
        if process == 0 {
            followers + clinics
        } else {
            followers
        }
    }

    #[test]
    fn one_process_takes_every_follower() {
        let split = FollowerSplit::new(50, 2, 1);
        assert_eq!(split.processes(), 1);
        assert_eq!(split.slots(0), 0..100);
        assert_eq!(split.clinics_of(0).len(), 50);
    }

    #[test]
    fn sockets_are_balanced_over_processes() {
        let split = FollowerSplit::new(50, 2, 2);
        assert_eq!(split.slots(0), 0..25);
        assert_eq!(split.slots(1), 25..100);
        assert_eq!(sockets(&split, 0, 50), 75);
        assert_eq!(sockets(&split, 1, 50), 75);

        let split = FollowerSplit::new(1000, 20, 4);
        let counts: Vec<usize> = (0..4).map(|p| sockets(&split, p, 1000)).collect();
        assert_eq!(counts.iter().sum::<usize>(), 21_000);
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "{counts:?}");
    }

    #[test]
    fn every_slot_is_assigned_once() {
        for (clinics, followers, processes) in [(7, 3, 3), (1, 1, 4), (10, 0, 2), (3, 5, 8)] {
            let split = FollowerSplit::new(clinics, followers, processes);
            let mut seen = Vec::new();
            for process in 0..processes {
                for (clinic, numbers) in split.clinics_of(process) {
                    for number in numbers {
                        assert!(number < followers);
                        seen.push(clinic * followers + number);
                    }
                }
            }
            assert_eq!(seen, (0..clinics * followers).collect::<Vec<_>>());
        }
    }

    #[test]
    fn publishers_fill_the_coordinator_first() {
        // 10 clinics with 1 follower over 4 processes: 20 sockets, 5 each,
        // and the coordinator's 10 publishers already exceed its share.
        let split = FollowerSplit::new(10, 1, 4);
        assert!(split.slots(0).is_empty());
        assert_eq!(
            split.slots(1).len() + split.slots(2).len() + split.slots(3).len(),
            10
        );
    }

    #[test]
    fn clinic_ranges_split_at_boundaries() {
        let split = FollowerSplit::new(3, 4, 2);
        // 15 sockets: the coordinator's share of 8 leaves it 5 followers.
        assert_eq!(
            split.clinics_of(0),
            vec![(0, vec![0, 1, 2, 3]), (1, vec![0])]
        );
        assert_eq!(
            split.clinics_of(1),
            vec![(1, vec![1, 2, 3]), (2, vec![0, 1, 2, 3])]
        );
    }
}
