"""Model/dataset card templates rendered from evaluation results, and Hub publishing."""
