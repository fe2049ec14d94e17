ALTER TABLE `conversations` ADD `rev` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `conversations` ADD `projected_version` integer DEFAULT 0 NOT NULL;