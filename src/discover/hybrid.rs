//! Hybrid discovery (brief §4): EAP-IG picks candidate edges, every other edge is removed, and exact greedy
//! ablation (ACDC, same threshold rule) runs over the candidates. The final circuit keeps ACDC's exact rule;
//! attribution only decides what is worth testing.
use super::acdc::Acdc;
use super::eap::edge_scores;
use super::{Circuit, Discovery, EdgeScores, Task};
use crate::graph::Selection;
use crate::progress::Progress;
use crate::Result;

#[derive(Debug, Clone)]
pub struct Hybrid {
    /// Candidate edges taken from EAP-IG (top |score|).
    pub candidates: usize,
    pub ig_steps: usize,
    pub acdc: Acdc,
}

impl Discovery for Hybrid {
    fn name(&self) -> &'static str {
        "hybrid"
    }

    fn discover(&self, task: &Task, progress: &dyn Progress) -> Result<Circuit> {
        Ok(self.discover_scored(task, progress)?.0)
    }

    fn discover_scored(&self, task: &Task, progress: &dyn Progress) -> Result<(Circuit, Option<EdgeScores>)> {
        progress.message("EAP-IG scores");
        let scores = edge_scores(task, Some(self.ig_steps), progress)?;
        let candidates = task.graph.select(&scores, Selection::TopN(self.candidates))?;
        let acdc = Acdc { initially_removed: Some(candidates), ..self.acdc.clone() };
        let mut circuit = acdc.discover(task, progress)?;
        // Edges ACDC never tested carry their attribution score.
        for (e, s) in scores.iter().enumerate() {
            if circuit.effect[e].is_none() {
                circuit.effect[e] = Some(*s);
            }
        }
        Ok((circuit, Some(EdgeScores { method: "eap-ig", ig_steps: Some(self.ig_steps), scores })))
    }
}
